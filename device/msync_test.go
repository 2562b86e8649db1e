package device_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

func TestMsyncFenceWritesFile(t *testing.T) {
	cases := []struct {
		name   string
		writes []int // offsets of 8-byte stores, each flushed
	}{
		{"one line", []int{128}},
		{"same page", []int{0, 64, 1000}},
		{"adjacent pages", []int{4095, 4096}},
		{"far apart", []int{8192, 100, poolSize - 8, 30000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFile(t, t.TempDir(), poolSize)
			d := mapFile(t, device.Msync{}, f, device.MapRequest{})
			want := make([]byte, poolSize)
			for i, off := range tc.writes {
				store := []byte{1, 2, 3, 4, 5, 6, 7, byte(i)}
				copy(d.Bytes()[off:], store)
				copy(want[off:], store)
				d.Flush(off, len(store))
			}
			require.NoError(t, d.Fence())
			assert.Equal(t, want, readFile(t, f))
		})
	}
}

func TestMsyncNeedsWritableFile(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	ro, err := openReadOnly(f)
	require.NoError(t, err)
	defer ro.Close()
	_, err = device.Msync{}.Map(ro, poolSize, device.MapRequest{})
	assert.Error(t, err)
}
