package heap_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

type Node struct {
	Key  uint64
	Name string
	Next *Node
	Kids [4]*Node
	Tags []uint32
}

type Root struct {
	Head  *Node
	Count int
}

func TestSmokeRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	err = h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		for i := range 100 {
			n, err := heap.New[Node](tx)
			if err != nil {
				return err
			}
			n.Key = uint64(i)
			if n.Name, err = heap.NewString(tx, "node"); err != nil {
				return err
			}
			if n.Tags, err = heap.MakeSlice[uint32](tx, 3, 3); err != nil {
				return err
			}
			n.Tags[2] = uint32(i)
			n.Next = root.Head
			n.Kids[1] = n
			root.Head = n
			root.Count++
		}
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, h.Close())

	for range 3 {
		h, err = heap.Open(path, &heap.Options{ForceRelocate: true})
		require.NoError(t, err)
		require.True(t, h.Recovery().Relocated)
		err = h.View(func(tx *heap.Tx) error {
			root, err := heap.Root[Root](tx)
			require.NoError(t, err)
			assert.Equal(t, 100, root.Count)
			i := 99
			for n := root.Head; n != nil; n = n.Next {
				assert.Equal(t, uint64(i), n.Key)
				assert.Equal(t, "node", n.Name)
				assert.Equal(t, uint32(i), n.Tags[2])
				assert.Same(t, n, n.Kids[1])
				i--
			}
			assert.Equal(t, -1, i)
			return nil
		})
		require.NoError(t, err)
		t.Log(h.Stats())
		require.NoError(t, h.Close())
	}
}

// TestDaxDevice runs transactions on the DAX device forced on an ordinary
// file system (the instructions run; tmpfs makes them no more durable than
// the page cache), then reopens the pool with the default device.
func TestDaxDevice(t *testing.T) {
	if device.DaxInstruction() == "" {
		t.Skip("no cache-line write-back instruction on this processor")
	}
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 4 << 20, Device: device.Dax{Force: true}})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 5) }))
	require.NoError(t, h.Update(renameAll))
	want := snapshot(t, h)
	st := h.Stats().Tx
	require.NoError(t, h.Close())
	assert.EqualValues(t, 2, st.Commits)
	h, err = heap.Open(path, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, want, snapshot(t, h))
}
