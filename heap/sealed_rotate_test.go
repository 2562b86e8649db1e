package heap_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// TestRotateKey rotates a sealed pool's key while another goroutine
// commits: afterwards the pool opens with the new key alone, holds every
// commit, and the old key is refused.
func TestRotateKey(t *testing.T) {
	oldKey, newKey, names := newKey(t), newKey(t), markers(10)
	path := sealedPool(t, oldKey, names)
	h, err := heap.Open(path, &heap.Options{Key: oldKey})
	require.NoError(t, err)

	var wg sync.WaitGroup
	var during []string
	var commitErr error
	wg.Go(func() {
		for i := range 20 {
			name := fmt.Sprintf("MARKER-during-%d-77c1", i)
			during = append(during, name)
			if commitErr = pushMarker(h, name); commitErr != nil {
				return
			}
		}
	})
	require.NoError(t, h.RotateKey(context.Background(), newKey))
	wg.Wait()
	require.NoError(t, commitErr)
	backup := filepath.Join(t.TempDir(), "backup.pool")
	require.NoError(t, h.Backup(backup))
	require.NoError(t, h.Close())

	all := append(reversed(during), reversed(names)...)
	requireNoPlaintext(t, path, all)
	for _, p := range []string{path, backup} {
		_, err = heap.Open(p, &heap.Options{Key: oldKey, ReadOnly: true})
		require.ErrorIs(t, err, pmemgo.ErrBadKey)
		h, err = heap.Open(p, &heap.Options{Key: newKey, ForceRelocate: true})
		require.NoError(t, err)
		got := readNames(t, h)
		require.NoError(t, h.Close())
		assert.ElementsMatch(t, all, got)
	}
}

// pushMarker links a node named name at the head of the root's list.
func pushMarker(h *heap.Heap, name string) error {
	return h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		if err := heap.Add(tx, root); err != nil {
			return err
		}
		n, err := heap.New[Node](tx)
		if err != nil {
			return err
		}
		if n.Name, err = heap.NewString(tx, name); err != nil {
			return err
		}
		n.Next, root.Head = root.Head, n
		root.Count++
		return nil
	})
}

// TestRotateKeyInterrupted stops a rotation after its header step: the
// pool then needs both keys, says so, and a RotateKey on an open with both
// finishes the rotation.
func TestRotateKeyInterrupted(t *testing.T) {
	oldKey, newKey, names := newKey(t), newKey(t), markers(5)
	path := sealedPool(t, oldKey, names)
	h, err := heap.Open(path, &heap.Options{Key: oldKey})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, h.RotateKey(ctx, newKey), context.Canceled)
	require.NoError(t, h.Close())

	for _, tc := range []struct {
		name     string
		key, old []byte
		want     string
	}{
		{"new key alone", newKey, nil, "give the old key too"},
		{"old key alone", oldKey, nil, "being rotated from this key"},
		{"wrong old key", newKey, newKey, "the old key given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := heap.Open(path, &heap.Options{Key: tc.key, OldKey: tc.old, ReadOnly: true})
			require.ErrorIs(t, err, pmemgo.ErrBadKey)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	h, err = heap.Open(path, &heap.Options{Key: newKey, OldKey: oldKey})
	require.NoError(t, err)
	assert.Equal(t, reversed(names), readNames(t, h))
	require.ErrorIs(t, h.RotateKey(context.Background(), oldKey), pmemgo.ErrBadKey, "another rotation while one is under way")
	require.NoError(t, h.RotateKey(context.Background(), newKey))
	require.NoError(t, h.Close())
	h, err = heap.Open(path, &heap.Options{Key: newKey})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, reversed(names), readNames(t, h))
}

// TestCrashRotateKey crashes a key rotation at every flush and fence:
// each image opens, with the new key and the old one or with the old key
// alone before the rotation's header is durable, to the same content.
func TestCrashRotateKey(t *testing.T) {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	oldKey, newKey := newKey(t), newKey(t)
	h, err := heap.Open(path, &heap.Options{Size: sealedCrashPoolSize, Key: oldKey})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 20) }))
	want := snapshot(t, h)
	require.NoError(t, h.Close())

	c := newSealedCapture()
	h, err = heap.Open(path, &heap.Options{Device: c.emu, Key: oldKey})
	require.NoError(t, err)
	c.armed = true
	require.NoError(t, h.RotateKey(context.Background(), newKey))
	c.armed = false
	require.NoError(t, h.Close())

	p := filepath.Join(dir, "image.pool")
	var both, oldOnly int
	for i, img := range c.images {
		require.NoError(t, os.WriteFile(p, img, 0o600))
		h, err := heap.Open(p, &heap.Options{Key: newKey, OldKey: oldKey, ForceRelocate: true})
		if errors.Is(err, pmemgo.ErrBadKey) {
			h, err = heap.Open(p, &heap.Options{Key: oldKey, ForceRelocate: true})
			oldOnly++
		} else {
			both++
		}
		require.NoError(t, err, "image %d", i)
		require.Equal(t, want, snapshot(t, h), "image %d", i)
		require.NoError(t, h.Close())
	}
	assert.Positive(t, both)
	assert.Positive(t, oldOnly)
	t.Logf("rotation: %d crash images taken, %d distinct: %d under both keys, %d before the rotation began", c.points, len(c.images), both, oldOnly)
}

func TestRotateKeyErrors(t *testing.T) {
	key := newKey(t)
	h, err := heap.Open(filepath.Join(t.TempDir(), "plain.pool"), &heap.Options{Size: sealedPoolSize})
	require.NoError(t, err)
	require.ErrorIs(t, h.RotateKey(context.Background(), key), pmemgo.ErrBadKey)
	require.NoError(t, h.Close())
	path := sealedPool(t, key, nil)
	h, err = heap.Open(path, &heap.Options{Key: key})
	require.NoError(t, err)
	defer h.Close()
	require.ErrorIs(t, h.RotateKey(context.Background(), key), pmemgo.ErrBadKey, "the same key")
	require.ErrorIs(t, h.RotateKey(context.Background(), key[:seal.KeySize-1]), pmemgo.ErrBadKey)
}
