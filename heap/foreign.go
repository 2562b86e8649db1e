package heap

import (
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// checkForeign enforces that persistent objects point only into the pool:
// every pointer word of every object the transaction allocated or logged
// must be nil or inside the pool. A pointer to Go memory would dangle as
// soon as the garbage collector or a restart reclaimed what it points to.
func (tx *Tx) checkForeign() error {
	a := tx.h.alloc
	for _, r := range tx.allocs {
		if err := tx.checkSlot(r.s, r.slot, 0, r.s.sh.Elems); err != nil {
			return err
		}
	}
	for _, sp := range tx.added {
		s, slot, within, ok := a.lookup(sp.off)
		if !ok {
			continue
		}
		ti := tx.h.types.byID(s.sh.Type)
		if ti == nil {
			continue
		}
		size := uint64(ti.desc.Size)
		first := uint32(uint64(within) / size)
		last := uint32(min((uint64(within)+sp.n-1)/size+1, uint64(s.sh.Elems)))
		if err := tx.checkSlot(s, slot, first, last); err != nil {
			return err
		}
	}
	return nil
}

// checkSlot checks elements [first, last) of a slot.
func (tx *Tx) checkSlot(s *slabRef, slot, first, last uint32) error {
	ti := tx.h.types.byID(s.sh.Type)
	if ti == nil || len(ti.desc.Ptrs) == 0 {
		return nil
	}
	h := tx.h
	off := h.alloc.slotOff(s, slot)
	for e := first; e < last; e++ {
		elem := off + uint64(e)*uint64(ti.desc.Size)
		for _, p := range ti.desc.Ptrs {
			v := *(*uintptr)(h.at(elem + uint64(p.Offset)))
			if v != 0 && v-h.base >= uintptr(len(h.mem)) {
				return foreignError(&ti.desc, s, slot, e, p, elem, v)
			}
		}
	}
	return nil
}

func foreignError(td *layout.TypeDesc, s *slabRef, slot, elem uint32, p layout.Pointer, off uint64, v uintptr) error {
	what := fmt.Sprintf("object %s (slab %d slot %d, offset %d)", td.Name, s.idx, slot, off)
	if s.sh.Kind == layout.KindArray {
		what = fmt.Sprintf("element %d of a %s array (slab %d slot %d, offset %d)", elem, td.Name, s.idx, slot, off)
	}
	field := p.Field
	if field == "" {
		field = "(value)"
	}
	return fmt.Errorf("%s field %s holds %#x: %w", what, field, v, pmemgo.ErrForeignPointer)
}
