package heap_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// TestSealedPoolGrows fills a sealed pool past its size: it grows in
// place as a plain pool does, its file stays ciphertext (the sealed
// header names the new size, the records of the new part are sealed),
// and it reopens grown, with every object, at its base.
func TestSealedPoolGrows(t *testing.T) {
	key, names := newKey(t), markers(3)
	path := filepath.Join(fastTempDir(t), "sealed.pool")
	h, err := heap.Open(path, &heap.Options{Size: growPoolSize, Key: key})
	require.NoError(t, err)
	base := h.Recovery().NewBase
	writeMarkers(t, h, names)
	require.NoError(t, h.Update(bigNode))
	st := h.Stats()
	require.Equal(t, 1, st.Growths)
	require.Greater(t, st.Size, uint64(growPoolSize))
	assert.Equal(t, base, h.Recovery().NewBase)
	want := snapshot(t, h)
	require.NoError(t, h.Close())

	requireNoPlaintext(t, path, names)
	checkSealed(t, path, key)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, seal.FileSize(int64(st.Size)), fi.Size())

	h, err = heap.Open(path, &heap.Options{Key: key})
	require.NoError(t, err)
	assert.Equal(t, st.Size, h.Stats().Size)
	assert.False(t, h.Recovery().Relocated)
	assert.Equal(t, want, snapshot(t, h))
	// It grows again, and the objects of both growths stay.
	require.NoError(t, h.Grow(int64(2*st.Size)))
	require.NoError(t, h.Update(bigNode))
	want = snapshot(t, h)
	require.NoError(t, h.Close())
	h, err = heap.Open(path, &heap.Options{Key: key, ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, 2*st.Size, h.Stats().Size)
	assert.Equal(t, want, snapshot(t, h))
}
