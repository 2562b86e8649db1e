package recovery

import (
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// ValidateSlabs checks every slab header below the high-water mark against
// the type table: a known type, slots that hold whole elements of it, and
// an extent inside the initialised slabs. It returns the map of the slabs,
// or the first problem.
func ValidateSlabs(mem []byte, h *layout.Header, high uint32, types []layout.TypeDesc) (*SlabMap, error) {
	m := NewSlabMap(h, high, types)
	var first error
	layout.WalkSlabs(mem, h, high, func(i uint32, sh *layout.SlabHeader, err error) bool {
		if err == nil {
			err = SlabTypeProblem(h, i, sh, high, types)
		}
		if err != nil {
			first = err
			return false
		}
		m.Add(i, sh)
		return true
	})
	return m, first
}

// SlabTypeProblem reports a slab whose header disagrees with the type
// table or the high-water mark, or nil.
func SlabTypeProblem(h *layout.Header, i uint32, sh *layout.SlabHeader, high uint32, types []layout.TypeDesc) error {
	fail := func(format string, args ...any) error {
		return &layout.SlabError{Slab: i, Offset: h.SlabOffset(i), Err: fmt.Errorf(format+": %w", append(args, pmemgo.ErrCorrupt)...)}
	}
	if uint64(i)+uint64(sh.Extent) > uint64(high) {
		return fail("extent of %d slabs runs past the %d initialised slabs", sh.Extent, high)
	}
	if sh.Type == 0 || int(sh.Type) > len(types) {
		return fail("type id %d, the pool has %d types", sh.Type, len(types))
	}
	td := &types[sh.Type-1]
	if uint64(sh.Elems)*uint64(td.Size) > uint64(sh.SlotSize) {
		return fail("%d elements of %s (%d bytes) do not fit a %d-byte slot", sh.Elems, td.Name, td.Size, sh.SlotSize)
	}
	if sh.Kind == layout.KindObjects && sh.Elems != 1 {
		return fail("object slab with %d elements per slot", sh.Elems)
	}
	if td.Align > 0 && (sh.SlotSize%td.Align != 0 || sh.DataOff%td.Align != 0) {
		return fail("slots of %d bytes at offset %d are not aligned for %s (align %d)", sh.SlotSize, sh.DataOff, td.Name, td.Align)
	}
	return nil
}

// validateRoot checks that the root, if any, is an allocated object of
// the type the heap state records.
func validateRoot(mem []byte, m *SlabMap, s *layout.State) error {
	if s.RootOff == 0 {
		return nil
	}
	loc, err := m.Locate(mem, s.RootOff)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if !loc.Allocated || loc.Within != 0 || loc.Elem != 0 || loc.Slab.Kind != layout.KindObjects || loc.Slab.Type != s.RootType {
		return fmt.Errorf("root at offset %d is not an allocated object of type %d (slab %d slot %d, type %d): %w",
			s.RootOff, s.RootType, loc.Index, loc.Slot, loc.Slab.Type, pmemgo.ErrCorrupt)
	}
	return nil
}
