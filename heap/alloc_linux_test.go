package heap_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// claimRoot keeps one small object, in the slab after a freed one.
type claimRoot struct{ S *propSmall }

// TestSummaryFreeRunChecked forges a slab summary that lists a used slab
// as free right after a slab that is free: an extent of two slabs would
// take both. Every slab of the run is checked against its header before
// the extent is placed there, so the allocation fails with ErrCorrupt
// naming the used slab, and nothing is written.
func TestSummaryFreeRunChecked(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "run.pool")
	// The image is read into memory taken before the pool is first
	// mapped: memory taken after its Close may land where it was mapped,
	// and the pool must be reopened there to use its summary.
	img := make([]byte, 2<<20)
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	var words []uint64
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[claimRoot](tx) // slab 0
		if err != nil {
			return err
		}
		if words, err = heap.MakeSlice[uint64](tx, 1000, 1000); err != nil { // slab 1
			return err
		}
		r.S, err = heap.New[propSmall](tx) // slab 2
		return err
	}))
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return heap.FreeSlice(tx, words) }))
	require.NoError(t, heap.Register[byte](h))
	require.NoError(t, h.Close())

	f, err := os.Open(path)
	require.NoError(t, err)
	_, err = io.ReadFull(f, img)
	require.NoError(t, errors.Join(err, f.Close()))
	hdr, st := poolMeta(t, img)
	require.Equal(t, uint32(3), st.SlabHigh)
	region := img[hdr.SumOff : hdr.SumOff+hdr.SumSize]
	sum, err := layout.DecodeSummary(region, &hdr)
	require.NoError(t, err)
	require.Equal(t, uint8(layout.KindFree), sum.Slabs[1].Kind)
	require.Equal(t, uint8(layout.KindObjects), sum.Slabs[2].Kind)
	sum.Slabs[2] = layout.SlabHeader{}
	_, err = layout.EncodeSummary(region, &sum)
	require.NoError(t, err)
	h = openForged(t, path, img)
	err = h.Update(func(tx *heap.Tx) error {
		_, err := heap.MakeSlice[byte](tx, 20000, 20000) // two slabs of 16 KiB
		return err
	})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), "slab 2 ")
	require.NoError(t, h.Close())
	assert.Equal(t, img, readFile(t, path), "nothing was written: the transaction failed before its first store")
}

// openForged writes img to path and opens it at its base, from its
// summary. An open that lands elsewhere validates every slab and its
// Close writes a true summary: the image is written again before the next
// try. The test is skipped if the base keeps being taken.
func openForged(t *testing.T, path string, img []byte) *heap.Heap {
	t.Helper()
	for range 5 {
		require.NoError(t, os.WriteFile(path, img, 0o600))
		h, err := heap.Open(path, nil)
		require.NoError(t, err)
		if r := h.Recovery(); !r.Relocated {
			require.True(t, r.FromSummary)
			return h
		}
		require.NoError(t, h.Close())
	}
	t.Skip("the pool's base kept being taken in this process; the summary is only used at the same base")
	return nil
}

// TestSummaryFreeSlabKeepsMark forges a summary that lists a used slab as
// free just below the top extent, then frees that extent: the mark comes
// down only to the forged slab, whose header says it is used, so the slab
// stays where the checker and the next allocation that wants it look at
// it, instead of passing above the mark, where nothing is checked.
func TestSummaryFreeSlabKeepsMark(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "mark.pool")
	img := make([]byte, 2<<20)
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[bigRoot](tx) // slab 0
		if err != nil {
			return err
		}
		if _, err = heap.New[propSmall](tx); err != nil { // slab 1
			return err
		}
		r.Data, err = heap.MakeSlice[byte](tx, 10000, 10000) // slab 2
		return err
	}))
	require.NoError(t, h.Close())
	f, err := os.Open(path)
	require.NoError(t, err)
	_, err = io.ReadFull(f, img)
	require.NoError(t, errors.Join(err, f.Close()))
	hdr, st := poolMeta(t, img)
	require.Equal(t, uint32(3), st.SlabHigh)
	region := img[hdr.SumOff : hdr.SumOff+hdr.SumSize]
	sum, err := layout.DecodeSummary(region, &hdr)
	require.NoError(t, err)
	require.Equal(t, uint8(layout.KindObjects), sum.Slabs[1].Kind)
	sum.Slabs[1] = layout.SlabHeader{}
	_, err = layout.EncodeSummary(region, &sum)
	require.NoError(t, err)

	h = openForged(t, path, img)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[bigRoot](tx)
		if err != nil {
			return err
		}
		return errors.Join(heap.FreeSlice(tx, r.Data), heap.Set(tx, &r.Data, nil))
	}))
	require.NoError(t, h.Close())
	_, st = poolMeta(t, readFile(t, path))
	assert.Equal(t, uint32(2), st.SlabHigh, "the mark stops above the slab whose header says used")
}
