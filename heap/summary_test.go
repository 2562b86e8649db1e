//go:build linux

package heap_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// The tests in this file cover the slab summary: a clean Close writes it,
// and a reopen at the same base uses it instead of reading every slab
// header, validating each slab when it is first used.

// openSameBase opens path with opts at the base the pool was closed at.
// The Go runtime of this process may have mapped something into that
// range since the pool was unmapped; the pool then lands elsewhere, and
// is closed and opened again at its new base. The test is skipped if that
// keeps happening, since the summary is only used at the same base.
func openSameBase(t *testing.T, path string, opts *heap.Options) *heap.Heap {
	t.Helper()
	for range 5 {
		h, err := heap.Open(path, opts)
		require.NoError(t, err)
		if !h.Recovery().Relocated {
			return h
		}
		require.NoError(t, h.Close())
	}
	t.Skip("the pool's base kept being taken in this process; the summary is only used at the same base")
	return nil
}

// summaryPool makes a pool with nodes, strings and slices in several slabs
// and a free slab between used ones, and returns its path and snapshot.
func summaryPool(t *testing.T) (string, string) {
	t.Helper()
	path := filepath.Join(fastTempDir(t), "s.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 300) }))
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		for range 100 {
			if err := removeHead(tx); err != nil {
				return err
			}
		}
		return nil
	}))
	want := snapshot(t, h)
	require.NoError(t, h.Close())
	return path, want
}

func TestReopenFromSummary(t *testing.T) {
	path, want := summaryPool(t)
	checkPool(t, path)

	h := openSameBase(t, path, nil)
	r := h.Recovery()
	require.True(t, r.FromSummary, "a clean pool reopened at its base is opened from its summary: %+v", r)
	require.NoError(t, r.SummaryIgnored)
	stats := h.Stats()
	assert.Equal(t, want, snapshot(t, h))
	// Allocate, free and log objects in slabs known only from the summary.
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 1000, 50) }))
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return removeHead(tx) }))
	require.NoError(t, h.Update(renameAll))
	after := snapshot(t, h)
	require.NoError(t, h.Close())
	checkPool(t, path)

	h = openSameBase(t, path, &heap.Options{FullValidation: true})
	assert.False(t, h.Recovery().FromSummary, "FullValidation reads every slab header")
	assert.Equal(t, after, snapshot(t, h))
	full := h.Stats()
	require.NoError(t, h.Close())

	h = openSameBase(t, path, nil)
	assert.True(t, h.Recovery().FromSummary)
	assert.Equal(t, after, snapshot(t, h))
	assert.Equal(t, full, h.Stats(), "stats from the summary equal those from the slab headers")
	assert.NotEqual(t, stats, full)
	require.NoError(t, h.Close())

	// A pool opened and closed without a write is left as it was.
	h = openSameBase(t, path, nil)
	before := readFile(t, path)
	require.NoError(t, h.View(func(*heap.Tx) error { return nil }))
	require.NoError(t, h.Close())
	assert.Equal(t, before, readFile(t, path), "an open that writes nothing leaves the file untouched")
}

// TestSummaryDamageFallsBack flips bits across the summary of a clean
// pool: each open at the same base notices, validates every slab header
// instead and opens the pool; the checker reports the damage; and Close
// writes a good summary again.
func TestSummaryDamageFallsBack(t *testing.T) {
	path, want := summaryPool(t)
	hdr, _ := poolMeta(t, readFile(t, path))
	used := summaryBytes(t, readFile(t, path), &hdr)
	flips, moved := 0, 0
	for off := hdr.SumOff; off < hdr.SumOff+used; off += 7 {
		// The pool as the last iteration's Close left it: clean, with a
		// good summary, at the base it was last mapped at.
		img := readFile(t, path)
		img[off] ^= 1 << (off % 8)
		require.NoError(t, os.WriteFile(path, img, 0o600))

		var problems []recovery.Problem
		require.NoError(t, recovery.CheckFile(path, func(p recovery.Problem) bool {
			problems = append(problems, p)
			return true
		}))
		require.Len(t, problems, 1, "flip at offset %d", off)
		assert.Equal(t, "summary", problems[0].Kind)

		h, err := heap.Open(path, nil)
		require.NoError(t, err)
		r := h.Recovery()
		if r.Relocated {
			// See openSameBase; the next flip gets the pool at its new base.
			moved++
			require.NoError(t, h.Close())
			continue
		}
		require.False(t, r.FromSummary, "flip at offset %d", off)
		require.ErrorIs(t, r.SummaryIgnored, pmemgo.ErrCorrupt, "flip at offset %d", off)
		require.Equal(t, want, snapshot(t, h))
		require.NoError(t, h.Close())
		checkPool(t, path)
		flips++
	}
	require.Greater(t, flips, 3*moved, "most opens must land at the pool's base for the test to mean something")
	h := openSameBase(t, path, nil)
	assert.True(t, h.Recovery().FromSummary, "Close wrote a new summary")
	require.NoError(t, h.Close())
	t.Logf("%d flips in the slab summary, each noticed (%d more not tested: the pool could not be mapped at its base)", flips, moved)
}

// TestSummaryNotTrustedAfterCrash copies a pool while it is open, as a
// crash would leave it: its summary, written by an earlier clean close,
// describes an older state and is not used.
func TestSummaryNotTrustedAfterCrash(t *testing.T) {
	path, _ := summaryPool(t)
	h := openSameBase(t, path, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 500, 200) }))
	crashed := filepath.Join(filepath.Dir(path), "crashed.pool")
	require.NoError(t, os.WriteFile(crashed, readFile(t, path), 0o600))
	want := snapshot(t, h)
	require.NoError(t, h.Close())

	c := openSameBase(t, crashed, nil)
	r := c.Recovery()
	assert.False(t, r.FromSummary)
	require.Error(t, r.SummaryIgnored)
	assert.NotErrorIs(t, r.SummaryIgnored, pmemgo.ErrCorrupt, "a stale summary is not damage")
	assert.Contains(t, r.SummaryIgnored.Error(), "not closed cleanly")
	assert.Equal(t, want, snapshot(t, c))
	require.NoError(t, c.Close())
	checkPool(t, crashed)
}

// nodeSlab returns the index of a slab holding Nodes in the pool image.
func nodeSlab(t *testing.T, img []byte) uint32 {
	t.Helper()
	hdr, st := poolMeta(t, img)
	types, err := layout.DecodeTypeTable(img[hdr.TypeOff:hdr.TypeOff+st.TypeBytes], st.Types, hdr.TypeOff)
	require.NoError(t, err)
	found := -1
	layout.WalkSlabs(img, &hdr, st.SlabHigh, func(i uint32, sh *layout.SlabHeader, err error) bool {
		require.NoError(t, err)
		if sh.Kind == layout.KindObjects && strings.HasSuffix(types[sh.Type-1].Name, "_test.Node") {
			found = int(i)
			return false
		}
		return true
	})
	require.GreaterOrEqual(t, found, 0)
	return uint32(found)
}

// TestLazySlabValidation damages the header of a slab of a clean pool.
// Opened from the summary, the pool opens (that slab's header is not
// read), reads work, and the first transaction that needs the slab fails
// with a corruption error naming it, leaving the slab as it was.
func TestLazySlabValidation(t *testing.T) {
	path, want := summaryPool(t)
	img := readFile(t, path)
	hdr, _ := poolMeta(t, img)
	slab := nodeSlab(t, img)
	off := hdr.SlabOffset(slab)
	img[off+20] ^= 4 // the used count, under the header checksum
	require.NoError(t, os.WriteFile(path, img, 0o600))

	_, err := heap.Open(path, &heap.Options{FullValidation: true})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)

	h := openSameBase(t, path, nil)
	require.True(t, h.Recovery().FromSummary)
	assert.Equal(t, want, snapshot(t, h))
	err = h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		// The first store of the transaction is to a node in the damaged
		// slab.
		for n := root.Head; n != nil; n = n.Next {
			if o := uint64(uintptr(unsafe.Pointer(n)) - h.Base()); o >= off && o < hdr.SlabOffset(slab+1) {
				return heap.Set(tx, &n.Key, n.Key+1)
			}
		}
		return errors.New("no node in the damaged slab")
	})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), fmt.Sprintf("slab %d at offset %d", slab, off))
	assert.Equal(t, want, snapshot(t, h), "the failed transaction rolled back")
	require.NoError(t, h.Close())
	assert.Equal(t, img, readFile(t, path), "nothing was written: the transaction failed before its first store")

	var problems []recovery.Problem
	require.NoError(t, recovery.CheckFile(path, func(p recovery.Problem) bool {
		problems = append(problems, p)
		return true
	}))
	require.NotEmpty(t, problems)
}

// Other is a type no slab of summaryPool holds.
type Other struct{ A, B uint64 }

// TestSummaryFreeSlabChecked forges a summary, with valid checksums and
// bindings, that lists a used slab as free: the checker reports the
// disagreement, and an allocation that would reuse the slab is refused
// instead of writing over its objects.
func TestSummaryFreeSlabChecked(t *testing.T) {
	path, _ := summaryPool(t)
	// Other is stored in the pool beforehand, so that allocating one
	// later stores nothing before it looks for a free slab.
	h, err := heap.Open(path, nil)
	require.NoError(t, err)
	require.NoError(t, heap.Register[Other](h))
	require.NoError(t, h.Close())
	img := readFile(t, path)
	hdr, _ := poolMeta(t, img)
	slab := nodeSlab(t, img)
	region := img[hdr.SumOff : hdr.SumOff+hdr.SumSize]
	sum, err := layout.DecodeSummary(region, &hdr)
	require.NoError(t, err)
	sum.Slabs[slab] = layout.SlabHeader{}
	_, err = layout.EncodeSummary(region, &sum)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, img, 0o600))

	var problems []recovery.Problem
	require.NoError(t, recovery.CheckFile(path, func(p recovery.Problem) bool {
		problems = append(problems, p)
		return true
	}))
	require.Len(t, problems, 1)
	assert.Equal(t, "summary", problems[0].Kind)
	assert.Contains(t, problems[0].String(), fmt.Sprintf("slab summary entry %d", slab))

	h = openSameBase(t, path, nil)
	require.True(t, h.Recovery().FromSummary)
	err = h.Update(func(tx *heap.Tx) error {
		_, err := heap.New[Other](tx)
		return err
	})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), fmt.Sprintf("slab %d", slab))
	require.NoError(t, h.Close())
	assert.Equal(t, img, readFile(t, path), "nothing was written: the transaction failed before its first store")
}

// TestCrashClose takes a crash at every flush and fence of a Close, which
// writes the header slots, the summary and the open mark: every image
// reopens at the same base with the committed state, from the summary
// only when the close completed, and passes the checker.
func TestCrashClose(t *testing.T) {
	path, _ := summaryPool(t)
	dir := filepath.Dir(path)
	c := newCapture(true)
	h, err := heap.Open(path, &heap.Options{Device: c.emu})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 700, 30) }))
	want := snapshot(t, h)
	c.armed = true
	require.NoError(t, h.Close())
	c.armed = false
	require.NotEmpty(t, c.images)

	fromSummary := 0
	for i, img := range c.images {
		p := filepath.Join(dir, "image.pool")
		require.NoError(t, os.WriteFile(p, img, 0o600))
		h, err := heap.Open(p, nil)
		require.NoError(t, err, "image %d", i)
		if h.Recovery().FromSummary {
			fromSummary++
		}
		require.Equal(t, want, snapshot(t, h), "image %d", i)
		require.NoError(t, h.Close())
		checkPool(t, p)
	}
	t.Logf("close: %d crash images taken, %d distinct ones checked, %d opened from the summary", c.points, len(c.images), fromSummary)
}

// TestRandomSlabDamageNeverPanics damages slab headers, bitmaps and the
// summary of a cleanly closed pool at random, opens it at its base (from
// the summary when it still holds) and allocates, logs and frees through
// it: every step either works or fails with an error, never a panic, and
// the checker reports on every pool afterwards.
func TestRandomSlabDamageNeverPanics(t *testing.T) {
	path, _ := summaryPool(t)
	good := readFile(t, path)
	hdr, st := poolMeta(t, good)
	// The nodes' offsets, taken from the clean pool: the damaged ones are
	// only used through offsets, never by following their pointers.
	h := openSameBase(t, path, nil)
	var nodes []uint64
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		for n := root.Head; n != nil; n = n.Next {
			nodes = append(nodes, uint64(uintptr(unsafe.Pointer(n))-h.Base()))
		}
		return err
	}))
	// The pool's base is held between rounds, from the moment it is
	// closed, so that each open can land there and use the summary (see
	// openSameBase). A few rounds of opens first let the runtime start
	// the threads that file system calls need, whose stacks would
	// otherwise be mapped into the range whenever it is free.
	for range 5 {
		require.NoError(t, h.Update(func(tx *heap.Tx) error { return tx.FreeOffset(nodes[len(nodes)-1]) }))
		require.NoError(t, h.View(func(*heap.Tx) error { return nil }))
		readFile(t, path)
		nodes = nodes[:len(nodes)-1]
	}
	base, size := h.Base(), len(h.Device().Bytes())
	require.NoError(t, h.Close())
	hold, err := holdAddr(base, size)
	if err != nil {
		t.Skipf("cannot hold the pool's base: %v", err)
	}
	defer hold.release()
	good = readFile(t, path)
	hdr, st = poolMeta(t, good)

	var regions [][2]uint64
	layoutSlabs(good, &hdr, st.SlabHigh, func(_ uint32, off, n uint64) { regions = append(regions, [2]uint64{off, n}) })
	regions = append(regions, [2]uint64{hdr.SumOff, summaryBytes(t, good, &hdr)})
	rounds := 150
	if testing.Short() {
		rounds = 40
	}
	rng := rand.New(rand.NewPCG(1, 2))
	opened, lazy, failedTx := 0, 0, 0
	held, heldRounds := true, 0
	for round := range rounds {
		img := append([]byte(nil), good...)
		for range 1 + rng.IntN(3) {
			r := regions[rng.IntN(len(regions))]
			img[r[0]+rng.Uint64N(r[1])] ^= byte(1 + rng.IntN(255))
		}
		require.NoError(t, os.WriteFile(path, img, 0o600))
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("round %d: panic: %v", round, p)
				}
			}()
			if held {
				heldRounds++
				require.NoError(t, hold.release())
				// Something of this process may take the range in the
				// moment it is free; the later rounds then open
				// elsewhere, from every slab header.
				defer func() { held = hold.retake() == nil }()
			}
			h, err := heap.Open(path, nil)
			if err != nil {
				require.ErrorIs(t, err, pmemgo.ErrCorrupt, "round %d", round)
				return
			}
			opened++
			if h.Recovery().FromSummary {
				lazy++
			}
			steps := []func(tx *heap.Tx) error{
				func(tx *heap.Tx) error {
					for range 40 {
						if _, err := heap.New[Node](tx); err != nil {
							return err
						}
					}
					_, err := heap.MakeSlice[uint32](tx, 3, 3)
					return err
				},
				func(tx *heap.Tx) error {
					n := (*Node)(unsafe.Pointer(&h.Device().Bytes()[nodes[rng.IntN(len(nodes))]]))
					return heap.Set(tx, &n.Key, 7)
				},
				func(tx *heap.Tx) error { return tx.FreeOffset(nodes[rng.IntN(len(nodes))]) },
			}
			for _, step := range steps {
				if err := h.Update(step); err != nil {
					failedTx++
					assert.True(t, errors.Is(err, pmemgo.ErrCorrupt) || errors.Is(err, pmemgo.ErrInvalidFree) ||
						errors.Is(err, pmemgo.ErrNotInPool) || errors.Is(err, pmemgo.ErrBadPointer),
						"round %d: %v", round, err)
				}
			}
			require.NoError(t, h.Close())
		}()
		require.NoError(t, recovery.CheckFile(path, func(recovery.Problem) bool { return true }), "round %d", round)
	}
	t.Logf("%d damaged pools (%d with the base held): %d opened, %d of them from the summary; %d transactions refused with an error",
		rounds, heldRounds, opened, lazy, failedTx)
	if heldRounds >= rounds/2 {
		assert.Greater(t, lazy, heldRounds/3, "most damage is in slabs, which a summary open does not read")
	}
}

// TestFullSlabsFromSummary fills slabs to the last slot, so that an open
// from the summary makes no allocator record for them until one is looked
// up: a View iterates their objects, Stats counts them, and a free of the
// oldest node (in the first, full slab) works and persists.
func TestFullSlabsFromSummary(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "full.pool")
	h, err := heap.Open(path, &heap.Options{Size: 4 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	const n = 2000
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, n) }))
	require.NoError(t, h.Close())

	full := openSameBase(t, path, &heap.Options{FullValidation: true})
	want := full.Stats()
	require.NoError(t, full.Close())
	countObjects := func(h *heap.Heap) int {
		k := 0
		require.NoError(t, h.View(func(tx *heap.Tx) error {
			for _, err := range heap.Objects[Node](tx) {
				if err != nil {
					return err
				}
				k++
			}
			return nil
		}))
		return k
	}

	h = openSameBase(t, path, nil)
	require.True(t, h.Recovery().FromSummary)
	assert.Equal(t, want, h.Stats(), "stats of slabs known only from the summary")
	assert.Equal(t, n, countObjects(h), "a View iterates the objects of full slabs")
	assert.Equal(t, n, countObjects(h), "and leaves the allocator as it was")
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		prev := root.Head
		for prev.Next.Next != nil {
			prev = prev.Next
		}
		last := prev.Next
		if last.Key != 0 {
			return fmt.Errorf("the list ends with node %d, not the first one made", last.Key)
		}
		if err := heap.Add(tx, prev); err != nil {
			return err
		}
		prev.Next, prev.Kids[1] = nil, nil
		if err := heap.FreeString(tx, last.Name); err != nil {
			return err
		}
		if err := heap.FreeSlice(tx, last.Tags); err != nil {
			return err
		}
		return heap.Free(tx, last)
	}))
	assert.Equal(t, n-1, countObjects(h))
	after := noTx(h.Stats())
	require.NoError(t, h.Close())
	checkPool(t, path)

	h = openSameBase(t, path, nil)
	require.True(t, h.Recovery().FromSummary)
	assert.Equal(t, after, noTx(h.Stats()), "the summary Close wrote holds the free")
	assert.Equal(t, n-1, countObjects(h))
	assert.Equal(t, n-1, countNodes(t, h))
	require.NoError(t, h.Close())
	full = openSameBase(t, path, &heap.Options{FullValidation: true})
	assert.Equal(t, after, noTx(full.Stats()), "the slab headers agree")
	require.NoError(t, full.Close())
}

// noTx returns st without what this open's transactions did.
func noTx(st heap.Stats) heap.Stats {
	st.Tx = heap.TxStats{}
	return st
}

// TestSummaryWritesEachShapeOnce checks the summary's compact form: each
// distinct slab header once, then 8 bytes a slab, so that a pool of
// thousands of slabs of a few classes has a summary a quarter the size of
// a copy of every header.
func TestSummaryWritesEachShapeOnce(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "s.pool")
	h, err := heap.Open(path, &heap.Options{Size: 16 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	for k := range 20 {
		require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, k*1000, 1000) }))
	}
	require.NoError(t, h.Close())
	img := readFile(t, path)
	hdr, st := poolMeta(t, img)
	sum, err := layout.DecodeSummary(img[hdr.SumOff:hdr.SumOff+hdr.SumSize], &hdr)
	require.NoError(t, err)
	heads := 0
	for _, sh := range sum.Slabs {
		if sh.Kind != layout.KindFree {
			heads++
		}
	}
	require.Equal(t, int(st.SlabHigh), len(sum.Slabs))
	require.Greater(t, heads, 100, "the pool has many slabs")
	assert.LessOrEqual(t, sum.Shapes, uint64(8), "slabs of a few classes have a few shapes (%d slab heads)", heads)
	// A copy of every header took 32 bytes a slab; the compact form must
	// stay under a third of that.
	assert.Less(t, sum.Size(), uint64(layout.SummaryHeaderSize+32*len(sum.Slabs))/3,
		"%d bytes for %d slabs of %d shapes", sum.Size(), len(sum.Slabs), sum.Shapes)

	h = openSameBase(t, path, nil)
	assert.True(t, h.Recovery().FromSummary)
	require.NoError(t, h.Close())
}

// TestOldSummaryIsStale opens a pool whose summary is in the format of an
// earlier release: the open reads every slab header instead, the checker
// finds nothing wrong (an old summary is not damage), and Close writes
// the current format, which the next open uses.
func TestOldSummaryIsStale(t *testing.T) {
	path, want := summaryPool(t)
	img := readFile(t, path)
	hdr, _ := poolMeta(t, img)
	copy(img[hdr.SumOff:], "SUMM") // the earlier format's magic
	require.NoError(t, os.WriteFile(path, img, 0o600))
	checkPool(t, path)

	h := openSameBase(t, path, nil)
	r := h.Recovery()
	assert.False(t, r.FromSummary)
	require.ErrorIs(t, r.SummaryIgnored, layout.ErrOldSummary)
	assert.NotErrorIs(t, r.SummaryIgnored, pmemgo.ErrCorrupt, "an old summary is not damage")
	assert.Equal(t, want, snapshot(t, h))
	require.NoError(t, h.Close())

	h = openSameBase(t, path, nil)
	assert.True(t, h.Recovery().FromSummary, "Close wrote a summary in the current format")
	assert.Equal(t, want, snapshot(t, h))
	require.NoError(t, h.Close())
	checkPool(t, path)
}
