package device_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// TestDaxInstructions runs every write-back instruction the processor has
// over a forced mapping: the stores stay visible in the file, and the
// write-backs are reported.
func TestDaxInstructions(t *testing.T) {
	if device.DaxInstruction() == "" {
		t.Skip("no cache-line write-back instruction on this processor")
	}
	for _, ins := range []device.Instruction{device.CLWB, device.CLFLUSHOPT, device.CLFLUSH} {
		t.Run(string(ins), func(t *testing.T) {
			f := newFile(t, fastDir(t), poolSize)
			d, err := device.Dax{Force: true, Instruction: ins}.Map(f, poolSize, device.MapRequest{})
			if err != nil {
				require.ErrorIs(t, err, device.ErrNotDax)
				t.Skipf("%s: %v", ins, err)
			}
			defer d.Close()
			var r recorder
			d.Subscribe(&r)
			copy(d.Bytes()[100:], "written back")
			d.Flush(100, 12)
			d.Flush(poolSize-1, 10) // clipped to the mapping
			require.NoError(t, d.Fence())
			assert.Equal(t, []string{"wb 64+64", "wb 65472+64", "fence"}, r.log)
			assert.Equal(t, "written back", string(readFile(t, f)[100:112]))
			type instructed interface{ Instruction() device.Instruction }
			assert.Equal(t, ins, d.(instructed).Instruction())
		})
	}
}

func TestDaxRefusesPlainFiles(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	d, err := device.Dax{}.Map(f, poolSize, device.MapRequest{})
	if err == nil {
		// The test directory is on a DAX file system: nothing to refuse.
		type synchronous interface{ Synchronous() bool }
		assert.True(t, d.(synchronous).Synchronous())
		require.NoError(t, d.Close())
		return
	}
	require.ErrorIs(t, err, device.ErrNotDax)
	// Auto falls back to msync there.
	d, err = device.Auto{}.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	require.NoError(t, d.Close())
}

func TestDaxUnknownInstruction(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	_, err := device.Dax{Force: true, Instruction: "clzap"}.Map(f, poolSize, device.MapRequest{})
	require.ErrorIs(t, err, device.ErrNotDax)
	assert.Contains(t, err.Error(), "clzap")
}
