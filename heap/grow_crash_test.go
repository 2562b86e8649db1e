package heap_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/recovery"
)

// growPoolSize is the size the growth crash tests start from: the
// smallest pool, which a 13-slab extent does not fit.
const growPoolSize = 1 << 20

// bigNode links a node whose tags take an extent of 13 slabs, more than a
// 1 MiB pool holds: the allocation grows the pool.
func bigNode(tx *heap.Tx) error {
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
	n.Key = 99
	if n.Name, err = heap.NewString(tx, "big"); err != nil {
		return err
	}
	if n.Tags, err = heap.MakeSlice[uint32](tx, 2, 200_000); err != nil {
		return err
	}
	n.Tags[0], n.Tags[1] = 7, 8
	n.Next, n.Kids[0] = root.Head, root.Head
	root.Head = n
	root.Count++
	return nil
}

// TestCrashGrow enumerates the crash points of a growth, at every flush
// and fence (with the variants in which unflushed lines reached the
// media): inside an allocation that commits, inside one whose
// transaction then aborts, and through Heap.Grow. Every image must reopen,
// at a new base, to the state before or after the operation with every
// object intact, its size the old one or the grown one; an image whose
// file is longer than its header (a crash after the file was extended and
// before the header was written) must grow again into that space.
func TestCrashGrow(t *testing.T) {
	cases := []struct {
		name  string
		op    func(h *heap.Heap) error
		fails bool
	}{
		{name: "alloc", op: func(h *heap.Heap) error { return h.Update(bigNode) }},
		{name: "alloc-abort", fails: true, op: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				if err := bigNode(tx); err != nil {
					return err
				}
				return errAbort
			})
		}},
		{name: "grow", op: func(h *heap.Heap) error { return h.Grow(3 << 20) }},
	}
	for _, tc := range cases {
		for _, buffered := range []bool{false, true} {
			name := tc.name
			if buffered {
				name += "/buffered"
			}
			t.Run(name, func(t *testing.T) { crashGrow(t, tc.op, tc.fails, buffered, nil) })
		}
		// A sealed pool: the emulated device holds the sealed file, and
		// the growth rewrites the sealed header too. Its device buffers
		// stores whatever the inner device does.
		t.Run(tc.name+"/sealed", func(t *testing.T) { crashGrow(t, tc.op, tc.fails, false, newKey(t)) })
	}
}

func crashGrow(t *testing.T, op func(h *heap.Heap) error, fails, buffered bool, key []byte) {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: growPoolSize, Key: key})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	before := snapshot(t, h)
	require.NoError(t, h.Close())

	c := newCapture(true)
	if key != nil {
		c = newSealedCapture()
	}
	c.emu.Buffered = buffered
	h, err = heap.Open(path, &heap.Options{Device: c.emu, Key: key})
	require.NoError(t, err)
	c.armed = true
	err = op(h)
	c.armed = false
	if fails {
		require.ErrorIs(t, err, errAbort)
	} else {
		require.NoError(t, err)
	}
	after := snapshot(t, h)
	grown := h.Stats().Size
	require.Greater(t, grown, uint64(growPoolSize), "the operation must grow the pool")
	require.Equal(t, 1, h.Stats().Growths)
	require.NoError(t, h.Close())

	// ahead counts sealed images whose sealed header was rewritten for
	// the growth while the pool's header was not.
	var old, new, longer, ahead int
	for i, img := range c.images {
		got, size := reopenGrown(t, dir, img, key)
		if got != before && got != after {
			t.Fatalf("image %d of %d: state is neither before nor after:\n--- got\n%s--- before\n%s--- after\n%s", i, len(c.images), got, before, after)
		}
		switch size {
		case growPoolSize:
			old++
		case grown:
			new++
		default:
			t.Fatalf("image %d: pool of %d bytes, neither %d nor %d", i, size, growPoolSize, grown)
		}
		if fileSize(size, key) < int64(len(img)) {
			longer++
			regrow(t, dir, img, grown, key)
		}
		if key != nil {
			sh, err := seal.DecodeHeader(img)
			require.NoError(t, err)
			if sh.PoolSize > size {
				ahead++
			}
		}
	}
	assert.Positive(t, old, "images before the growth")
	assert.Positive(t, new, "images after the growth")
	assert.Positive(t, longer, "images of a file extended before its header")
	if key != nil {
		assert.Positive(t, ahead, "images whose sealed header has the new size and pool header the old")
	}
	t.Logf("%d crash images taken, %d distinct ones checked: %d of the old size (%d with the file already extended), %d grown",
		c.points, len(c.images), old, longer, new)
}

// fileSize returns the size of the file of a pool of size bytes, sealed
// when key is set.
func fileSize(size uint64, key []byte) int64 {
	if key != nil {
		return seal.FileSize(int64(size))
	}
	return int64(size)
}

// reopenGrown is reopenImage returning the recovered pool's size too; a
// sealed image (key set) is checked with the key.
func reopenGrown(t *testing.T, dir string, img []byte, key []byte) (string, uint64) {
	t.Helper()
	if key == nil {
		got := reopenImage(t, dir, img)
		h, err := heap.Open(filepath.Join(dir, "image.pool"), nil)
		require.NoError(t, err)
		defer h.Close()
		return got, h.Stats().Size
	}
	p := filepath.Join(dir, "image.pool")
	require.NoError(t, os.WriteFile(p, img, 0o600))
	h, err := heap.Open(p, &heap.Options{Key: key, ForceRelocate: true})
	require.NoError(t, err, "reopening a crash image")
	require.NoError(t, h.Close())
	checkSealed(t, p, key)
	h, err = heap.Open(p, &heap.Options{Key: key, ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	return snapshot(t, h), h.Stats().Size
}

// regrow reopens an image whose file is longer than its pool and grows it
// to size: the growth takes the space the file already has.
func regrow(t *testing.T, dir string, img []byte, size uint64, key []byte) {
	t.Helper()
	p := filepath.Join(dir, "regrow.pool")
	require.NoError(t, os.WriteFile(p, img, 0o600))
	h, err := heap.Open(p, &heap.Options{Key: key})
	require.NoError(t, err)
	require.NoError(t, h.Grow(int64(size)))
	require.NoError(t, h.Update(bigNode))
	require.NoError(t, h.Close())
	if key == nil {
		checkPool(t, p)
	} else {
		checkSealed(t, p, key)
	}
	fi, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, int64(len(img)), fi.Size(), "the growth reuses the file's space")
}

// checkSealed runs the offline checker, with the key, on the sealed pool
// at path: it must find no problem.
func checkSealed(t *testing.T, path string, key []byte) {
	t.Helper()
	_, err := recovery.CheckSealedFile(path, key, nil, func(p recovery.Problem) bool {
		t.Errorf("checker: %s", p)
		return true
	})
	require.NoError(t, err)
}
