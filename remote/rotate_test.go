package remote_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// openWith opens the remote pool url with key and a backup of dir.
func openWith(t *testing.T, url, dir, backup string, key []byte) (*heap.Heap, error) {
	t.Helper()
	opts := openOpts(dir, backup)
	opts.Heap.Key = key
	return remote.Open(url, opts)
}

// TestRotateKey rotates the key of a sealed remote pool. A pool that is
// open cannot be rotated. A rotation interrupted part way leaves a pool
// that opens with neither key, and the same call again finishes it;
// once more does nothing. The pool then opens with the new key, from the
// rotating client's backup and from an empty one, a download of it opens
// with the new key, and the old key is refused.
func TestRotateKey(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	dir := t.TempDir()
	node, oldKey := sealedRegion(t, dir, func(h *heap.Heap) { build(t, h, 30) })
	newKey := newKey(t)
	url := node.url("g")
	rotOpts := openOpts(dir, "a.backup")
	rotOpts.Heap.Key = oldKey

	h, err := openWith(t, url, dir, "a.backup", oldKey)
	require.NoError(t, err)
	assert.ErrorIs(t, remote.RotateKey(t.Context(), url, rotOpts, newKey), remote.ErrBusy)
	require.NoError(t, h.Close())

	ctx, cancel := context.WithCancel(t.Context())
	restore := remote.SetRotateHook(func(off uint64) {
		if off >= 4<<20 {
			cancel()
		}
	})
	require.ErrorIs(t, remote.RotateKey(ctx, url, rotOpts, newKey), context.Canceled)
	restore()
	for _, key := range [][]byte{oldKey, newKey} {
		_, err := openWith(t, url, dir, "a.backup", key)
		assert.ErrorIs(t, err, pmemgo.ErrBadKey)
		assert.ErrorContains(t, err, "rotation")
	}
	require.NoError(t, remote.RotateKey(t.Context(), url, rotOpts, newKey))
	require.NoError(t, remote.RotateKey(t.Context(), url, rotOpts, newKey), "a finished rotation")

	_, err = openWith(t, url, dir, "cold.backup", oldKey)
	assert.ErrorIs(t, err, pmemgo.ErrBadKey)
	h, err = openWith(t, url, dir, "a.backup", newKey)
	require.NoError(t, err)
	verify(t, h, 30)
	build(t, h, 5)
	require.NoError(t, h.Close())
	h, err = openWith(t, url, dir, "cold2.backup", newKey)
	require.NoError(t, err)
	verify(t, h, 35)
	require.NoError(t, h.Close())

	f, err := os.Create(filepath.Join(t.TempDir(), "copy.pool"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, remote.Download(t.Context(), url, nil, f))
	_, err = heap.Open(f.Name(), &heap.Options{Key: oldKey, ReadOnly: true})
	assert.ErrorIs(t, err, pmemgo.ErrBadKey)
	h, err = heap.Open(f.Name(), &heap.Options{Key: newKey, ReadOnly: true})
	require.NoError(t, err)
	verify(t, h, 35)
	require.NoError(t, h.Close())
}
