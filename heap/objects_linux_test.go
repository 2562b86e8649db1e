package heap_test

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// TestObjectsFromSummary iterates over the nodes of a pool opened from
// its slab summary, whose slab headers are validated on first use: a View
// validates each slab it reads without changing the allocator, an Update
// loads it, and a damaged header ends the iteration with ErrCorrupt
// naming the slab.
func TestObjectsFromSummary(t *testing.T) {
	path, _ := summaryPool(t)
	// Both images are made before any open: memory this process takes
	// after an open may land where the pool was mapped, and the pool must
	// be reopened there to use its summary.
	good := readFile(t, path)
	bad := slices.Clone(good)
	hdr, _ := poolMeta(t, good)
	slab := nodeSlab(t, good)
	bad[hdr.SlabOffset(slab)+20] ^= 4 // the used count, under the header checksum

	require.NoError(t, os.WriteFile(path, bad, 0o600))
	h := openSameBase(t, path, nil)
	require.True(t, h.Recovery().FromSummary)
	for _, update := range []bool{false, true} {
		run := h.View
		if update {
			run = h.Update
		}
		err := run(func(tx *heap.Tx) error {
			for _, err := range heap.Objects[Node](tx) {
				if err != nil {
					return err
				}
			}
			return nil
		})
		require.ErrorIs(t, err, pmemgo.ErrCorrupt, "update %v", update)
		assert.Contains(t, err.Error(), fmt.Sprintf("slab %d", slab))
	}
	require.NoError(t, h.Close())

	require.NoError(t, os.WriteFile(path, good, 0o600))
	h = openSameBase(t, path, nil)
	defer h.Close()
	require.True(t, h.Recovery().FromSummary)
	var want []uint64
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		require.NoError(t, err)
		for n := root.Head; n != nil; n = n.Next {
			want = append(want, n.Key)
		}
		slices.Sort(want)
		return nil
	}))
	require.Len(t, want, 200, "summaryPool leaves 200 nodes, all linked")
	// Views run in parallel: validating a slab in one must not change
	// what another reads (the race detector watches).
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			assert.NoError(t, h.View(func(tx *heap.Tx) error {
				assert.Equal(t, want, keysOf(t, heap.Objects[Node](tx)))
				return nil
			}))
		})
	}
	wg.Wait()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		assert.Equal(t, want, keysOf(t, heap.Objects[Node](tx)))
		return nil
	}))
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		assert.Equal(t, want, keysOf(t, heap.Objects[Node](tx)), "after the Update loaded the slabs")
		return nil
	}))
}
