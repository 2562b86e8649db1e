package device_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// TestFileAccessSharesTheMapping checks that only the devices whose
// mapping is shared with the file offer FileAccess, and that for them a
// file write is seen by a load and a store by a file read.
func TestFileAccessSharesTheMapping(t *testing.T) {
	for _, mc := range mappers() {
		t.Run(mc.name, func(t *testing.T) {
			d := mapFile(t, mc.m, newFile(t, t.TempDir(), poolSize), device.MapRequest{})
			fa, ok := d.(device.FileAccess)
			if mc.name != "msync" {
				assert.False(t, ok, "a private or DAX mapping must not offer file access")
				return
			}
			require.True(t, ok)
			require.NoError(t, fa.WriteAt([]byte("written"), 5000))
			assert.Equal(t, []byte("written"), d.Bytes()[5000:5007])
			copy(d.Bytes()[poolSize-6:], "stored")
			got := make([]byte, 6)
			require.NoError(t, fa.ReadAt(got, poolSize-6))
			assert.Equal(t, []byte("stored"), got)
		})
	}
}

func TestFileAccessBounds(t *testing.T) {
	f := newFile(t, t.TempDir(), 2*poolSize)
	d := mapFile(t, device.Msync{}, f, device.MapRequest{})
	fa := d.(device.FileAccess)
	buf := make([]byte, 16)
	// The file is longer than the mapping: access past the mapped size is
	// refused even though the file has the bytes.
	assert.Error(t, fa.ReadAt(buf, poolSize-8))
	assert.Error(t, fa.WriteAt(buf, poolSize-8))
	assert.Error(t, fa.ReadAt(buf, -1))
	require.NoError(t, fa.ReadAt(buf, poolSize-16))
	require.NoError(t, d.Close())
	assert.ErrorIs(t, fa.ReadAt(buf, 0), device.ErrClosed)
	assert.ErrorIs(t, fa.WriteAt(buf, 0), device.ErrClosed)
}

// TestFileAccessWriteIsFlushedLikeStores checks that bytes written to the
// file go through the same Flush and Fence as stores, which subscribers
// are told of.
func TestFileAccessWriteIsFlushedLikeStores(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	d := mapFile(t, device.Msync{}, f, device.MapRequest{})
	var rec recorder
	cancel := d.Subscribe(&rec)
	defer cancel()
	require.NoError(t, d.(device.FileAccess).WriteAt([]byte{9, 9, 9}, 64))
	d.Flush(64, 3)
	require.NoError(t, d.Fence())
	assert.Equal(t, []byte{9, 9, 9}, readFile(t, f)[64:67])
	assert.Equal(t, []string{"wb 64+64", "fence"}, rec.log)
}
