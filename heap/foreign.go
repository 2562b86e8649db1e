package heap

import (
	"fmt"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// checkForeign enforces that persistent objects point only at what the
// pool holds: every pointer word of every object the transaction allocated
// or logged must be nil, or point at an allocated object of its type (a
// string or slice into an array of its element type). A pointer to Go
// memory would dangle as soon as the garbage collector or a restart
// reclaimed what it points to; a pointer to a freed slot would dangle once
// the slot is reused.
func (tx *Tx) checkForeign() error {
	a := tx.h.alloc
	for _, r := range tx.allocs {
		if tx.freed[a.slotOff(r.s, r.slot)] {
			// Allocated and freed by the transaction: gone at commit.
			continue
		}
		if err := tx.checkSlot(r.s, r.slot, 0, r.s.sh.Elems); err != nil {
			return err
		}
	}
	for _, sp := range tx.added {
		s, slot, within, ok := a.lookup(sp.off)
		if !ok || tx.freed[a.slotOff(s, slot)] {
			// An object the transaction also frees is gone at commit:
			// what it points at no longer matters.
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
			word := h.at(elem + uint64(p.Offset))
			v := *(*uintptr)(word)
			if v == 0 {
				continue
			}
			if v-h.base >= uintptr(len(h.mem)) {
				return pointerError(&ti.desc, s, slot, e, p, elem, fmt.Sprintf("holds %#x", v), pmemgo.ErrForeignPointer)
			}
			why, err := tx.pointee(p, uint64(v-h.base), word)
			if err != nil {
				return err
			}
			if why != "" {
				return pointerError(&ti.desc, s, slot, e, p, elem, why, pmemgo.ErrBadPointer)
			}
		}
	}
	return nil
}

// pointee says what is wrong with what a pointer into the pool points at,
// or "": it must be an allocated slot, not one this transaction frees, and
// hold what the pointer's kind and type say. These are the rules the
// offline checker applies.
func (tx *Tx) pointee(p layout.Pointer, off uint64, word unsafe.Pointer) (string, error) {
	a := tx.h.alloc
	t, slot, within, ok := a.lookup(off)
	if ok {
		var err error
		if ok, err = a.allocated(t, slot); err != nil {
			return "", err
		}
	}
	switch {
	case !ok:
		return fmt.Sprintf("points at pool offset %d, which is not in an allocated object", off), nil
	case tx.freed[a.slotOff(t, slot)]:
		return fmt.Sprintf("points at pool offset %d, in an object this transaction frees", off), nil
	case p.Kind == layout.PtrUnsafe:
		return "", nil
	}
	target := tx.h.types.byID(t.sh.Type)
	if target == nil || target.desc.Name != p.Target {
		return fmt.Sprintf("points at pool offset %d, in a slot of another type than %s", off, p.Target), nil
	}
	size := uint64(target.desc.Size)
	if uint64(within)%size != 0 {
		return fmt.Sprintf("points at pool offset %d, inside a %s rather than at its start", off, p.Target), nil
	}
	end := uint64(within)
	switch p.Kind {
	case layout.PtrString:
		end += uint64(*(*uintptr)(unsafe.Add(word, 8)))
	case layout.PtrSlice:
		end += uint64(*(*uintptr)(unsafe.Add(word, 16))) * size
	}
	if t.sh.Kind == layout.KindObjects && within != 0 || end > uint64(t.sh.SlotSize) {
		return fmt.Sprintf("points at pool offset %d, and its length runs past the end of the array it points into", off), nil
	}
	return "", nil
}

func pointerError(td *layout.TypeDesc, s *slabRef, slot, elem uint32, p layout.Pointer, off uint64, why string, sentinel error) error {
	what := fmt.Sprintf("object %s (slab %d slot %d, offset %d)", td.Name, s.idx, slot, off)
	if s.sh.Kind == layout.KindArray {
		what = fmt.Sprintf("element %d of a %s array (slab %d slot %d, offset %d)", elem, td.Name, s.idx, slot, off)
	}
	field := p.Field
	if field == "" {
		field = "(value)"
	}
	return fmt.Errorf("%s field %s %s: %w", what, field, why, sentinel)
}
