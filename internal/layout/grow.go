package layout

import (
	"fmt"

	"github.com/pmemgo/pmemgo"
)

// GrowthUnit is what a pool's size grows by at least, and a multiple of
// which every grown size is: a page, so that the new part maps right after
// the old one.
const GrowthUnit = 4096

// Grown returns the header of h's pool grown to size bytes: as many more
// slabs as fit, followed by a slab summary large enough for all of them.
// The slabs, the type table and the undo log stay where they are, so that
// every object keeps its offset. The old summary region, before the log or
// after the old slabs, is left behind: the new slabs cover the latter, and
// slabs above the high-water mark are never read. The error wraps
// pmemgo.ErrNoSpace when size exceeds h.MaxSize and
// pmemgo.ErrInvalidOptions when size is not a growth.
func Grown(h Header, size uint64) (Header, error) {
	switch {
	case size%GrowthUnit != 0:
		return h, fmt.Errorf("grow to %d bytes: not a multiple of %d: %w", size, GrowthUnit, pmemgo.ErrInvalidOptions)
	case size <= h.Size:
		return h, fmt.Errorf("grow to %d bytes: the pool has %d already: %w", size, h.Size, pmemgo.ErrInvalidOptions)
	case h.MaxSize != 0 && size > h.MaxSize:
		return h, fmt.Errorf("grow to %d bytes: beyond the pool's maximum size of %d bytes: %w", size, h.MaxSize, pmemgo.ErrNoSpace)
	}
	n := (size - h.SlabOff) / h.SlabSize
	for n > h.Slabs && h.SlabOff+n*h.SlabSize+SummarySize(n) > size {
		n--
	}
	if n <= h.Slabs {
		return h, fmt.Errorf("grow to %d bytes: no room for another %d-byte slab and the slab summary: %w", size, h.SlabSize, pmemgo.ErrInvalidOptions)
	}
	g := h
	g.Size, g.Slabs = size, n
	g.SumOff, g.SumSize = h.SlabOff+n*h.SlabSize, SummarySize(n)
	if err := g.Validate(); err != nil {
		return h, fmt.Errorf("grow to %d bytes: %w: %w", size, err, pmemgo.ErrInvalidOptions)
	}
	return g, nil
}

// GrowthOf reports whether header b describes the same pool as a, or a
// grown from it: the fixed regions agree and b is at least as large.
// A crash during a growth leaves the two header slots one each way.
func GrowthOf(a, b *Header) bool {
	fixed := a.UUID == b.UUID && a.TypeOff == b.TypeOff && a.TypeSize == b.TypeSize &&
		a.LogOff == b.LogOff && a.LogSize == b.LogSize && a.SlabOff == b.SlabOff && a.SlabSize == b.SlabSize
	if !fixed || b.Size < a.Size || b.Slabs < a.Slabs {
		return false
	}
	if b.Size == a.Size {
		return a.Slabs == b.Slabs && a.SumOff == b.SumOff && a.SumSize == b.SumSize
	}
	return true
}
