package recovery

import (
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// SlabMap tells, for every initialised slab, which slab heads the extent
// it belongs to, so that an offset is located in constant time.
type SlabMap struct {
	h     *layout.Header
	types []layout.TypeDesc
	// owner[i] is the head of the extent covering slab i, or -1 when slab i
	// is free.
	owner []int32
	// The header of head i is shapes[shape[i]] with used[i] slots used.
	// A pool's slabs have few distinct headers but for the count (one per
	// class, extent size and generation), so thousands of slabs cost 8
	// bytes each rather than a header's 40: that memory, fresh at each
	// open, is much of what an open from the summary costs.
	shape  []uint32
	used   []uint32
	shapes []layout.SlabHeader
	// shapeOf finds a shape; last is the shape of the latest Add, which
	// runs of slabs of one class find without hashing.
	shapeOf map[layout.SlabHeader]uint32
	last    uint32
}

// NewSlabMap returns an empty map of slabs [0, high).
func NewSlabMap(h *layout.Header, high uint32, types []layout.TypeDesc) *SlabMap {
	m := &SlabMap{h: h, types: types, owner: make([]int32, high), shape: make([]uint32, high), used: make([]uint32, high),
		shapeOf: map[layout.SlabHeader]uint32{}}
	for i := range m.owner {
		m.owner[i] = -1
	}
	return m
}

// Add records slab i with header sh, covering sh.Extent slabs.
func (m *SlabMap) Add(i uint32, sh *layout.SlabHeader) {
	for k := i; k < i+sh.Extent && int(k) < len(m.owner); k++ {
		m.owner[k] = int32(i)
	}
	if int(i) >= len(m.shape) {
		return
	}
	key := *sh
	key.Used = 0
	if int(m.last) >= len(m.shapes) || m.shapes[m.last] != key {
		k, ok := m.shapeOf[key]
		if !ok {
			k = uint32(len(m.shapes))
			m.shapes = append(m.shapes, key)
			m.shapeOf[key] = k
		}
		m.last = k
	}
	m.shape[i], m.used[i] = m.last, sh.Used
}

// setShapes makes shapes, distinct headers with no slot used, the map's
// shapes, for addShaped. It must come before any Add.
func (m *SlabMap) setShapes(shapes []layout.SlabHeader) {
	m.shapes = shapes
	clear(m.shapeOf)
	for k, sh := range shapes {
		m.shapeOf[sh] = uint32(k)
	}
}

// addShaped records slab i with header shapes[shape] and used slots
// used, as Add does with that header.
func (m *SlabMap) addShaped(i, shape, used uint32) {
	for k := i; k < i+m.shapes[shape].Extent && int(k) < len(m.owner); k++ {
		m.owner[k] = int32(i)
	}
	if int(i) < len(m.shape) {
		m.shape[i], m.used[i] = shape, used
	}
}

// head returns the header of slab i, which must be a head.
func (m *SlabMap) head(i uint32) layout.SlabHeader {
	sh := m.shapes[m.shape[i]]
	sh.Used = m.used[i]
	return sh
}

// Heads calls fn for each slab head in index order.
func (m *SlabMap) Heads(fn func(i uint32, sh layout.SlabHeader)) {
	for i, o := range m.owner {
		if o == int32(i) {
			fn(uint32(i), m.head(uint32(i)))
		}
	}
}

// Head returns the header of slab i and whether slab i is the head of an
// extent in the map.
func (m *SlabMap) Head(i uint32) (layout.SlabHeader, bool) {
	if int(i) >= len(m.owner) || m.owner[i] != int32(i) {
		return layout.SlabHeader{}, false
	}
	return m.head(i), true
}

// Location is where a pool offset falls in the slabs.
type Location struct {
	// Index is the slab, the first of its extent.
	Index uint32
	Slab  layout.SlabHeader
	Slot  uint32
	// Elem is the element within the slot, Within the byte offset within
	// the element.
	Elem, Within uint32
	Allocated    bool
}

// Locate finds the slot holding pool offset off. It fails when off is not
// inside the slot area of a used slab.
func (m *SlabMap) Locate(mem []byte, off uint64) (Location, error) {
	var loc Location
	idx, ok := m.h.SlabIndex(off)
	if !ok || int(idx) >= len(m.owner) {
		return loc, fmt.Errorf("offset %d is outside the used slabs: %w", off, pmemgo.ErrCorrupt)
	}
	if m.owner[idx] < 0 {
		return loc, fmt.Errorf("offset %d is in free slab %d: %w", off, idx, pmemgo.ErrCorrupt)
	}
	loc.Index = uint32(m.owner[idx])
	loc.Slab = m.head(loc.Index)
	start := m.h.SlabOffset(loc.Index) + uint64(loc.Slab.DataOff)
	if off < start || off >= start+uint64(loc.Slab.Slots)*uint64(loc.Slab.SlotSize) {
		return loc, fmt.Errorf("offset %d is in slab %d outside its slots: %w", off, loc.Index, pmemgo.ErrCorrupt)
	}
	rel := off - start
	loc.Slot = uint32(rel / uint64(loc.Slab.SlotSize))
	inSlot := uint32(rel % uint64(loc.Slab.SlotSize))
	if size := m.types[loc.Slab.Type-1].Size; size > 0 {
		loc.Elem, loc.Within = inSlot/size, inSlot%size
	}
	bm := layout.Bitmap(mem[m.h.SlabOffset(loc.Index):], loc.Slab.Slots)
	loc.Allocated = bm[loc.Slot/8]&(1<<(loc.Slot%8)) != 0
	return loc, nil
}
