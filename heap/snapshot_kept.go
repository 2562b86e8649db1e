package heap

import (
	"fmt"
	"sort"

	"github.com/pmemgo/pmemgo"
)

// linesPerRegion is the number of lines in a region of keptRegion bytes.
const linesPerRegion = keptRegion / lineSize

// keptLines is what a snapshot kept in one region of keptRegion bytes: a
// bit per line says whether it is kept, so that a transaction finds out
// without a map lookup, and lines says where each copy is, so that a read
// visits only the region's kept lines.
type keptLines struct {
	bits  [linesPerRegion / 64]uint64
	lines []keptAt
}

// keptAt is a kept line and where its copy is: >= 0 in the arena, < 0 in
// the spill file (-1-offset).
type keptAt struct {
	line uint32
	pos  int64
}

func (k *keptLines) has(l uint32) bool {
	b := l % linesPerRegion
	return k.bits[b/64]&(1<<(b%64)) != 0
}

func (k *keptLines) add(l uint32, pos int64) {
	b := l % linesPerRegion
	k.bits[b/64] |= 1 << (b % 64)
	k.lines = append(k.lines, keptAt{line: l, pos: pos})
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
			copy(bufs[i], s.h.mem[off:])
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
		for r := max(off/keptRegion, done+1); r*keptRegion < end && s.regions != nil; r++ {
			done = r
			if s.regions[r] == nil {
				continue
			}
			for _, k := range s.regions[r].lines {
				if err := s.overlayLine(bufs, offs, k); err != nil {
					return err
				}
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
