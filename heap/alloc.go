package heap

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// slabRef is the volatile state of one slab (the head of its extent).
// Allocation works on the volatile bitmap; the persistent header and bitmap
// are written at commit, under the undo log, so that an allocation costs no
// fence of its own.
type slabRef struct {
	idx uint32
	sh  layout.SlabHeader
	// bits is the persistent bitmap with the running transaction's
	// allocations set; its frees are applied only at commit, so a slot
	// freed in a transaction is never reused by the same transaction.
	bits []uint64
	used uint32
	next int // bitmap word to search from
	// fresh is set for a slab the running transaction initialised: its
	// header is not yet written.
	fresh bool
	// dead is set when the slab was released or dropped by a rollback;
	// class lists skip it. listed is set while it is in its class list.
	dead, listed bool
	// inTx is set while the slab is in the running transaction's list.
	inTx bool
	// loaded is set once sh and bits are those of the slab's own, validated
	// header. A pool opened from its slab summary starts with every slab
	// unloaded: sh then holds the summary's entry and bits is nil, until
	// load reads the slab.
	loaded bool
	// lo and hi bound the bitmap words the running transaction changed;
	// lo > hi when it changed none.
	lo, hi int
}

type classKey struct {
	typ  uint32
	slot uint32
	kind uint8
}

type allocator struct {
	h     *Heap
	hdr   *layout.Header
	owner []int32 // head of the extent covering each slab, -1 when free
	heads []*slabRef
	// classes lists, per class, slabs that may have a free slot.
	classes map[classKey][]*slabRef
	high    uint32 // volatile slab high-water mark
	// lazy is set when the slabs came from the slab summary: each one is
	// loaded, and a free one checked, when first used.
	lazy bool
	// m holds, in a lazy allocator, the summary's entry of each extent
	// head whose slabRef is not made yet: heads[i] is nil while owner[i]
	// is i. An open makes refs only for the slabs with room, since the
	// memory of a ref for each of the thousands of full slabs of a large
	// pool is most of what an open costs on a machine where fresh pages
	// fault slowly; the others are made when first looked up.
	m *recovery.SlabMap
	// spare holds refs made ahead, so that refs made one at a time on
	// lookup do not each cost an allocation.
	spare []slabRef
}

func newAllocator(h *Heap, m *recovery.SlabMap) *allocator {
	hdr := &h.pool.Header
	a := &allocator{
		h: h, hdr: hdr,
		// Slabs above the high-water mark are free; owner and heads grow
		// to cover them as they are used.
		owner:   make([]int32, h.state.SlabHigh),
		heads:   make([]*slabRef, h.state.SlabHigh),
		classes: map[classKey][]*slabRef{},
		high:    h.state.SlabHigh,
	}
	for i := range a.owner {
		a.owner[i] = -1
	}
	a.lazy = h.pool.Report.FromSummary
	if a.lazy {
		a.m = m
	}
	// One allocation for the refs made now: a pool of thousands of slabs
	// opens in a fraction of the time that as many allocations take.
	n := 0
	m.Heads(func(_ uint32, sh layout.SlabHeader) {
		if !a.lazy || sh.Used < sh.Slots {
			n++
		}
	})
	a.spare = make([]slabRef, n)
	m.Heads(func(i uint32, sh layout.SlabHeader) {
		if a.lazy && sh.Used == sh.Slots {
			// Full: it has no place in a class list.
			for k := i; k < i+sh.Extent; k++ {
				a.owner[k] = int32(i)
			}
			return
		}
		s := a.newRef(i, sh)
		if !a.lazy {
			s.readBits(h.mem[hdr.SlabOffset(i):])
		}
		a.place(s)
		a.list(s)
	})
	return a
}

// newRef returns a ref of slab i with header sh, not loaded.
func (a *allocator) newRef(i uint32, sh layout.SlabHeader) *slabRef {
	if len(a.spare) == 0 {
		a.spare = make([]slabRef, 64)
	}
	s := &a.spare[0]
	a.spare = a.spare[1:]
	*s = slabRef{idx: i, sh: sh, used: sh.Used, lo: 1, hi: 0}
	return s
}

// ref returns the ref of extent head i, making it from the slab summary
// the first time.
func (a *allocator) ref(i int32) *slabRef {
	if s := a.heads[i]; s != nil {
		return s
	}
	sh, _ := a.m.Head(uint32(i))
	s := a.newRef(uint32(i), sh)
	a.heads[i] = s
	return s
}

// refFor is ref for tx: a View, which must not change the allocator, gets
// a ref of its own for a slab that has none yet.
func (a *allocator) refFor(tx *Tx, i int32) *slabRef {
	if s := a.heads[i]; s != nil || tx.writable {
		return a.ref(i)
	}
	sh, _ := a.m.Head(uint32(i))
	return &slabRef{idx: uint32(i), sh: sh, used: sh.Used, lo: 1, hi: 0}
}

// eachHead calls fn with each extent head's index, header and count of
// used slots, without making refs.
func (a *allocator) eachHead(fn func(i uint32, sh *layout.SlabHeader, used uint32)) {
	for i, o := range a.owner {
		if o != int32(i) {
			continue
		}
		if s := a.heads[i]; s != nil {
			fn(uint32(i), &s.sh, s.used)
			continue
		}
		sh, _ := a.m.Head(uint32(i))
		fn(uint32(i), &sh, sh.Used)
	}
}

// readBits copies the slab's bitmap from its header at b.
func (s *slabRef) readBits(b []byte) {
	bm := layout.Bitmap(b, s.sh.Slots)
	s.bits = make([]uint64, len(bm)/8)
	for w := range s.bits {
		s.bits[w] = binary.LittleEndian.Uint64(bm[w*8:])
	}
	s.loaded = true
}

// load reads and validates the header of a slab known only from the slab
// summary, before its bitmap is used.
func (a *allocator) load(s *slabRef) error {
	if s.loaded {
		return nil
	}
	sh, err := recovery.LoadSlab(a.h.mem, a.hdr, s.idx, &s.sh)
	if err != nil {
		return err
	}
	s.sh, s.used = sh, sh.Used
	s.readBits(a.h.mem[a.hdr.SlabOffset(s.idx):])
	return nil
}

// allocated reports whether slot of s is allocated, loading s first.
func (a *allocator) allocated(s *slabRef, slot uint32) (bool, error) {
	if err := a.load(s); err != nil {
		return false, err
	}
	return s.isSet(slot), nil
}

// list puts s back in its class list if it has room and is not there.
func (a *allocator) list(s *slabRef) {
	if s.dead || s.listed || s.used == s.sh.Slots {
		return
	}
	k := classKey{s.sh.Type, s.sh.SlotSize, s.sh.Kind}
	a.classes[k] = append(a.classes[k], s)
	s.listed = true
}

func (a *allocator) place(s *slabRef) {
	for n := s.idx + s.sh.Extent; uint32(len(a.owner)) < n; {
		a.owner = append(a.owner, -1)
		a.heads = append(a.heads, nil)
	}
	for k := s.idx; k < s.idx+s.sh.Extent; k++ {
		a.owner[k] = int32(s.idx)
	}
	a.heads[s.idx] = s
}

// take reserves a free slot of s, which must have one.
func (s *slabRef) take() uint32 {
	n := len(s.bits)
	for i := range n {
		w := (s.next + i) % n
		free := ^s.bits[w]
		if w == n-1 && s.sh.Slots%64 != 0 {
			free &= 1<<(s.sh.Slots%64) - 1
		}
		if free == 0 {
			continue
		}
		b := bits.TrailingZeros64(free)
		s.bits[w] |= 1 << b
		s.used++
		s.next = w
		s.touch(w)
		return uint32(w*64 + b)
	}
	panic("pmemgo: slab has no free slot although its count says so")
}

func (s *slabRef) touch(w int) {
	if s.lo > s.hi {
		s.lo, s.hi = w, w
		return
	}
	s.lo, s.hi = min(s.lo, w), max(s.hi, w)
}

func (s *slabRef) isSet(slot uint32) bool { return s.bits[slot/64]&(1<<(slot%64)) != 0 }

// slotOff returns the pool offset of a slot.
func (a *allocator) slotOff(s *slabRef, slot uint32) uint64 {
	return a.hdr.SlabOffset(s.idx) + uint64(s.sh.DataOff) + uint64(slot)*uint64(s.sh.SlotSize)
}

// alloc reserves a slot of the class for tx and returns its slab and slot.
func (a *allocator) alloc(tx *Tx, k classKey, elems uint32) (*slabRef, uint32, error) {
	list := a.classes[k]
	for len(list) > 0 {
		s := list[len(list)-1]
		if s.dead || s.used == s.sh.Slots {
			list = list[:len(list)-1]
			s.listed = false
			continue
		}
		a.classes[k] = list
		if err := a.load(s); err != nil {
			return nil, 0, err
		}
		if s.used == s.sh.Slots {
			continue
		}
		if err := tx.touchSlab(s); err != nil {
			return nil, 0, err
		}
		return s, s.take(), nil
	}
	a.classes[k] = list
	s, err := a.newSlab(tx, k, elems)
	if err != nil {
		return nil, 0, err
	}
	if err := tx.touchSlab(s); err != nil {
		return nil, 0, err
	}
	slot := s.take()
	a.list(s)
	return s, slot, nil
}

// newSlab initialises, in volatile state only, a slab (or an extent of
// slabs, for a slot larger than a slab) for class k.
func (a *allocator) newSlab(tx *Tx, k classKey, elems uint32) (*slabRef, error) {
	extent := uint32(1)
	slots, dataOff := layout.SlabGeometry(a.hdr.SlabSize, k.slot)
	if slots == 0 {
		need := uint64(layout.SlabHeaderSize+64) + uint64(k.slot)
		extent = uint32((need + a.hdr.SlabSize - 1) / a.hdr.SlabSize)
		slots, dataOff = layout.SlabGeometry(uint64(extent)*a.hdr.SlabSize, k.slot)
	}
	idx, err := a.findFree(tx, extent)
	if err != nil {
		return nil, fmt.Errorf("allocating a slab for %d-byte slots: %w", k.slot, err)
	}
	s := &slabRef{
		idx: idx, fresh: true, loaded: true, lo: 1, hi: 0,
		sh: layout.SlabHeader{
			Kind: k.kind, Type: k.typ, SlotSize: k.slot, Slots: slots, DataOff: dataOff,
			Extent: extent, Elems: elems, Gen: a.hdr.SwizzleGen,
		},
		bits: make([]uint64, layout.BitmapBytes(slots)/8),
	}
	a.place(s)
	tx.fresh = append(tx.fresh, s)
	return s, nil
}

// findFree returns the start of the first run of n free slabs. Free
// slabs below the high-water mark and the never-used ones above it form
// one space: a run may lie below the mark, or begin with the free slabs
// just below it and go on above it, raising the mark.
func (a *allocator) findFree(tx *Tx, n uint32) (uint32, error) {
	start, run := uint32(0), uint32(0)
	for i := uint32(0); i < a.high; i++ {
		if a.owner[i] >= 0 {
			run = 0
			continue
		}
		if run == 0 {
			start = i
		}
		if run++; run == n {
			return start, a.claim(tx, start, n)
		}
	}
	if run == 0 {
		start = a.high
	}
	if uint64(start)+uint64(n) > a.hdr.Slabs {
		if err := a.h.growFor(uint64(start) + uint64(n)); err != nil {
			return 0, fmt.Errorf("%d contiguous slabs needed, the longest free run is %d of %d slabs: %w",
				n, a.longestRun(), a.hdr.Slabs, err)
		}
	}
	if err := a.claim(tx, start, run); err != nil {
		return 0, err
	}
	if err := tx.touchState(); err != nil {
		return 0, err
	}
	a.high = start + n
	tx.state.SlabHigh = a.high
	return start, nil
}

// claim prepares the m free slabs from start, all below the high-water
// mark, to become (the beginning of) a new extent.
func (a *allocator) claim(tx *Tx, start, m uint32) error {
	if a.lazy {
		// The summary said free; the slabs' own headers must agree
		// before they are written over.
		for k := start; k < start+m; k++ {
			if err := recovery.CheckFreeSlab(a.h.mem, a.hdr, k); err != nil {
				return err
			}
		}
	}
	if m < 2 {
		return nil
	}
	// The slabs after the first of a reused run hold object data from now
	// on, yet they start where a header would. Their zero first lines are
	// logged, so that a rollback puts back slabs a reopen reads as free.
	// Slabs above the mark need no such care: a rollback lowers the mark
	// below them again.
	for k := start + 1; k < start+m; k++ {
		if err := tx.logRange(a.hdr.SlabOffset(k), layout.SlabHeaderSize); err != nil {
			return err
		}
	}
	if tx.h.buffered {
		return nil
	}
	return tx.h.fence()
}

// longestRun returns the length of the longest run of free slabs, the
// never-used ones above the high-water mark included.
func (a *allocator) longestRun() uint32 {
	best, run := uint32(0), uint32(0)
	for i := range a.owner {
		if a.owner[i] >= 0 {
			run = 0
			continue
		}
		run++
		best = max(best, run)
	}
	// The slabs past owner were never used.
	return max(best, run+uint32(a.hdr.Slabs-uint64(len(a.owner))))
}

// lowerMark brings the transaction's high-water mark down over the free
// slabs at the top, including the extents its commit releases (those it
// left with no slot used), so that the summary and the checker cover only
// slabs in use and a reopen sees one free space above the last used
// extent. The heap state is logged and written at commit like any other
// change of it, so lowering the mark is atomic with the frees.
func (a *allocator) lowerMark(tx *Tx) {
	i := a.high
	for i > 0 {
		o := a.owner[i-1]
		if o < 0 {
			if a.lazy && recovery.CheckFreeSlab(a.h.mem, a.hdr, i-1) != nil {
				// The summary says free, the slab's header does not: it
				// stays below the mark, where the allocation that would
				// reuse it checks it and reports it.
				break
			}
			i--
			continue
		}
		s := a.ref(o)
		if !s.inTx || s.used != 0 {
			break
		}
		i = s.idx
	}
	if i < a.high {
		a.high = i
		tx.state.SlabHigh = i
	}
}

// lookup returns the slab and slot holding pool offset off, and the byte
// offset inside the slot.
func (a *allocator) lookup(off uint64) (*slabRef, uint32, uint32, bool) {
	idx, ok := a.hdr.SlabIndex(off)
	if !ok || int(idx) >= len(a.owner) || a.owner[idx] < 0 {
		return nil, 0, 0, false
	}
	s := a.ref(a.owner[idx])
	start := a.hdr.SlabOffset(s.idx) + uint64(s.sh.DataOff)
	if off < start {
		return nil, 0, 0, false
	}
	rel := off - start
	slot := rel / uint64(s.sh.SlotSize)
	if slot >= uint64(s.sh.Slots) {
		return nil, 0, 0, false
	}
	return s, uint32(slot), uint32(rel % uint64(s.sh.SlotSize)), true
}

// release forgets a slab whose last slot the committing transaction freed.
func (a *allocator) release(s *slabRef) {
	for k := s.idx; k < s.idx+s.sh.Extent; k++ {
		a.owner[k] = -1
	}
	a.heads[s.idx] = nil
	s.dead = true
}

// summary returns the slab summary of the committed state: an entry for
// each slab below high, the header of each extent's first slab and zeros
// for the others.
func (a *allocator) summary(high uint32) *layout.Summary {
	sum := &layout.Summary{Slabs: make([]layout.SlabHeader, high)}
	a.eachHead(func(i uint32, sh *layout.SlabHeader, used uint32) {
		if i < high {
			e := *sh
			e.Used, e.Gen = used, 0
			sum.Slabs[i] = e
		}
	})
	return sum
}
