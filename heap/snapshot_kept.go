package heap

import (
	"fmt"
	"sort"

	"github.com/pmemgo/pmemgo"
)

// linesPerRegion is the number of lines in a region of keptRegion bytes.
const linesPerRegion = keptRegion / lineSize

// keptBlock is how many kept lines' entries a block of keptIndex holds: a
// huge page of them (see snapMemory).
const keptBlock = hugePage / 16

// keptIndex says which lines a snapshot kept and where their copies are,
// with as few scattered memory accesses as a transaction's first change
// of a line can afford: one bit per line that may be kept (its slot: the
// line itself, or for a snapshot limited to ranges, its place among their
// lines), and entries appended to blocks that never move, chained per
// region of keptRegion bytes (newest first) so that a read visits only
// its regions' kept lines. Nothing is allocated until a line is kept.
type keptIndex struct {
	slots int64
	bits  []uint64
	// heads holds, per region, 1 + the index of its newest entry, or 0.
	heads  []int32
	blocks [][]keptAt
	// n counts the entries, fill those of the last block.
	n, fill int32
	// mem is where blocks and the bitmap come from first.
	mem *snapMemory
}

// keptAt is a kept line, 1 + the index of the region's entry before it
// (or 0), and where its copy is: >= 0 in the arena, < 0 in the spill file
// (-1-offset).
type keptAt struct {
	line uint32
	next int32
	pos  int64
}

func (x *keptIndex) has(slot int64) bool {
	return x.bits != nil && x.bits[slot/64]&(1<<(slot%64)) != 0
}

// add records that line, of the given slot, is kept at pos, in an image
// of size bytes.
func (x *keptIndex) add(line uint32, slot, pos, size int64) error {
	if k := len(x.blocks); k == 0 || int(x.fill) == len(x.blocks[k-1]) {
		b, err := x.mem.indexBlock()
		if err != nil {
			return err
		}
		x.blocks = append(x.blocks, b)
		x.fill = 0
	}
	if x.bits == nil {
		x.bits, x.heads = x.mem.bitmap((x.slots+63)/64, (size+keptRegion-1)/keptRegion)
	}
	x.bits[slot/64] |= 1 << (slot % 64)
	// Entries are numbered block*keptBlock + place in the block, plus one.
	i := int32(len(x.blocks)-1)*keptBlock + x.fill
	r := line / linesPerRegion
	x.blocks[i/keptBlock][i%keptBlock] = keptAt{line: line, next: x.heads[r], pos: pos}
	x.fill++
	x.n++
	x.heads[r] = i + 1
	return nil
}

// each calls fn with each line kept in region r.
func (x *keptIndex) each(r int64, fn func(keptAt) error) error {
	if x.heads == nil {
		return nil
	}
	for i := x.heads[r]; i != 0; {
		k := x.blocks[(i-1)/keptBlock][(i-1)%keptBlock]
		if err := fn(k); err != nil {
			return err
		}
		i = k.next
	}
	return nil
}

// rangeSlots returns the slot of the first line of each range, lines
// that two ranges share having one slot, and the number of slots.
func rangeSlots(es []Extent) ([]int64, int64) {
	first := make([]int64, len(es))
	var n, prevLast int64 = 0, -1
	for i, e := range es {
		lo, hi := e.Off/lineSize, (e.Off+e.Len-1)/lineSize
		if lo == prevLast {
			first[i] = n - 1
			n += hi - lo
		} else {
			first[i] = n
			n += hi - lo + 1
		}
		prevLast = hi
	}
	return first, n
}

// arenaLine returns the position in the arena of room for one more line:
// block*arenaBlock + offset in the block.
func (s *Snapshot) arenaLine() (int64, error) {
	if n := len(s.arena); n == 0 || s.fill == len(s.arena[n-1]) {
		b, err := s.h.snapMem.arenaBlock()
		if err != nil {
			return 0, err
		}
		s.arena = append(s.arena, b)
		s.fill = 0
	}
	pos := int64(len(s.arena)-1)*arenaBlock + int64(s.fill)
	s.fill += lineSize
	return pos, nil
}

// checkExtents returns an error unless es are sorted, disjoint, non-empty
// ranges within a pool of size bytes.
func checkExtents(es []Extent, size int64) error {
	var end int64
	for i, e := range es {
		if e.Len <= 0 || e.Off < end || e.Off > size-e.Len {
			return fmt.Errorf("snapshot: range %d [%d, +%d) of a pool of %d bytes: not sorted, disjoint and inside the pool: %w",
				i, e.Off, e.Len, size, pmemgo.ErrInvalidOptions)
		}
		end = e.Off + e.Len
	}
	return nil
}

// ReadRanges reads several ranges of the image at once, as ReadAt would
// read each: bufs[i] gets the image's bytes from offs[i]. The ranges must
// be sorted and disjoint. It copies from the pool's memory under one
// pass of the snapshot's lock, which suits many small ranges, such as the
// runs of a replication batch.
func (s *Snapshot) ReadRanges(bufs [][]byte, offs []int64) error {
	if len(bufs) != len(offs) {
		return fmt.Errorf("snapshot: %d buffers for %d offsets: %w", len(bufs), len(offs), pmemgo.ErrInvalidOptions)
	}
	var end int64
	for i, off := range offs {
		if off < end || off > s.size-int64(len(bufs[i])) {
			return fmt.Errorf("snapshot: range %d [%d, +%d) of an image of %d bytes: not sorted, disjoint and inside the image: %w",
				i, off, len(bufs[i]), s.size, pmemgo.ErrInvalidOptions)
		}
		end = off + int64(len(bufs[i]))
	}
	return s.unlockedCopy(func() error {
		for i, off := range offs {
			copy(bufs[i], s.mem[off:])
		}
		return nil
	}, func() error { return s.overlayRanges(bufs, offs) })
}

// overlayRanges puts the kept lines and the patched words into bufs, the
// pool's bytes from offs. s.mu is held. Each region is visited once, and
// each of its kept lines finds its ranges by binary search, so a batch of
// many runs costs its kept lines, not runs times kept lines.
func (s *Snapshot) overlayRanges(bufs [][]byte, offs []int64) error {
	done := int64(-1)
	for i, off := range offs {
		end := off + int64(len(bufs[i]))
		for r := max(off/keptRegion, done+1); r*keptRegion < end; r++ {
			done = r
			if err := s.idx.each(r, func(k keptAt) error { return s.overlayLine(bufs, offs, k) }); err != nil {
				return err
			}
		}
		s.patchZeros(bufs[i], off)
	}
	return nil
}

// overlayLine copies the kept line k into the ranges it overlaps.
func (s *Snapshot) overlayLine(bufs [][]byte, offs []int64, k keptAt) error {
	at := int64(k.line) * lineSize
	i := sort.Search(len(offs), func(i int) bool { return offs[i]+int64(len(bufs[i])) > at })
	for ; i < len(offs) && offs[i] < at+lineSize; i++ {
		if err := s.copyLine(bufs[i], offs[i], int64(k.line), k.pos); err != nil {
			return err
		}
	}
	return nil
}
