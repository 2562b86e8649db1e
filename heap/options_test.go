package heap_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// TestInvalidOptions creates pools with options no pool can have: each
// error wraps ErrInvalidOptions, names the option, its value and the
// limit, and no file is left behind.
func TestInvalidOptions(t *testing.T) {
	cases := []struct {
		name string
		opts heap.Options
		want []string
	}{
		{"size below minimum", heap.Options{Size: 64 << 10}, []string{"Options.Size 65536", "minimum of 1048576 bytes"}},
		{"negative size", heap.Options{Size: -1}, []string{"Options.Size -1", "negative"}},
		{"slab size not a power of two", heap.Options{Size: 8 << 20, SlabSize: 5000}, []string{"Options.SlabSize 5000", "power of two from 16384 to 16777216"}},
		{"slab size too small", heap.Options{Size: 8 << 20, SlabSize: 4096}, []string{"Options.SlabSize 4096", "16384"}},
		{"slab size too large", heap.Options{Size: 64 << 20, SlabSize: 32 << 20}, []string{"Options.SlabSize 33554432", "16777216"}},
		{"negative log size", heap.Options{Size: 8 << 20, LogSize: -4096}, []string{"Options.LogSize -4096", "negative"}},
		{"log larger than pool", heap.Options{Size: 2 << 20, LogSize: 4 << 20}, []string{"Options.LogSize 4194304", "larger than the pool", "2097152"}},
		{"no room for a slab", heap.Options{Size: 1 << 20, LogSize: 960 << 10}, []string{"Options.Size 1048576", "no room for a slab", "undo log of 983040 bytes"}},
		{"slab larger than the room left", heap.Options{Size: 2 << 20, SlabSize: 2 << 20}, []string{"Options.Size 2097152", "no room for a slab", "2097152 more"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := heap.Open(filepath.Join(dir, "p.pool"), &tc.opts)
			require.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			left, rerr := os.ReadDir(dir)
			require.NoError(t, rerr)
			assert.Empty(t, left, "a refused create leaves no file")
		})
	}
}

// TestSizeOfExistingPool opens an existing pool with other sizes than it
// was created with: they are ignored, and the pool keeps its own.
func TestSizeOfExistingPool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Close())
	for _, opts := range []heap.Options{{Size: 8 << 20}, {Size: 64 << 10, SlabSize: 5000, LogSize: 1}} {
		h, err = heap.Open(path, &opts)
		require.NoError(t, err)
		st := h.Stats()
		assert.Equal(t, uint64(2<<20), st.Size)
		assert.Equal(t, uint64(64<<10), st.SlabSize)
		require.NoError(t, h.Close())
	}
}
