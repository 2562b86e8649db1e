package heap_test

import (
	"math/bits"
	"unsafe"

	"pgregory.net/rapid"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// The model of the allocator that TestAllocatorModel checks the heap
// against: the pool's geometry, the allocator's size classes, and the
// live objects with the slabs they occupy.

// propSmall is an object of a few words.
type propSmall struct{ A, B uint64 }

// propBig is an object larger than a slab: it takes an extent.
type propBig struct {
	V    uint64
	Data [20000]byte
}

// propRoot holds every live object of the test, by handle.
type propRoot struct {
	Small [8]*propSmall
	Big   [3]*propBig
	Bytes [6][]byte
	Words [3][]uint64
}

// propKinds are the kinds of objects, by handle array of propRoot.
const (
	pSmall = iota
	pBig
	pBytes
	pWords
	pKinds
)

var propHandles = [pKinds]int{8, 3, 6, 3}

// propClass is an allocator class as the model sees it.
type propClass struct {
	kind int
	slot uint32
}

// propObj is a live object of the model.
type propObj struct {
	cls  propClass
	off  uint64 // pool offset of the object
	slab uint32 // its slab, the first of its extent
	fill byte
	n    int // elements of an array
}

// propModel is the state of the pool the test expects.
type propModel struct {
	t    *rapid.T
	path string
	h    *heap.Heap
	// hdr is the pool's geometry.
	hdr layout.Header
	// live are the committed objects, by kind and handle.
	live [pKinds]map[int]*propObj
	// rootSlab is the slab of the root object, which is never freed.
	rootSlab uint32
	// fills numbers the objects, so that each has its own content.
	fills byte
}

// slabGeometry returns the extent and slots of a slab of class c.
func (m *propModel) slabGeometry(c propClass) (extent, slots uint32) {
	size := m.hdr.SlabSize
	if slots, _ := layout.SlabGeometry(size, c.slot); slots > 0 {
		return 1, slots
	}
	need := uint64(layout.SlabHeaderSize+64) + uint64(c.slot)
	extent = uint32((need + size - 1) / size)
	slots, _ = layout.SlabGeometry(uint64(extent)*size, c.slot)
	return extent, slots
}

// propArraySlot is the allocator's size class of an n-byte array.
func propArraySlot(n uint64) uint32 {
	if n <= 256 {
		return uint32((n + 15) &^ 15)
	}
	p := uint64(1) << (63 - bits.LeadingZeros64(n))
	step := p / 4
	return uint32((n + step - 1) / step * step)
}

func (m *propModel) class(kind, n int) propClass {
	switch kind {
	case pSmall:
		return propClass{kind, uint32(unsafe.Sizeof(propSmall{}))}
	case pBig:
		return propClass{kind, uint32(unsafe.Sizeof(propBig{}))}
	case pBytes:
		return propClass{kind, propArraySlot(uint64(n))}
	}
	return propClass{kind, propArraySlot(uint64(n) * 8)}
}

// occupancy returns, for the objects given, the slabs they cover and how
// many objects each slab head holds. The root's slab is always used.
func (m *propModel) occupancy(objs []*propObj) ([]bool, map[uint32]int, map[uint32]propClass) {
	used := make([]bool, m.hdr.Slabs)
	count := map[uint32]int{}
	cls := map[uint32]propClass{}
	used[m.rootSlab] = true
	for _, o := range objs {
		extent, _ := m.slabGeometry(o.cls)
		for k := o.slab; k < o.slab+extent; k++ {
			if used[k] && k != o.slab {
				m.t.Fatalf("object at offset %d: slab %d is also used by another slab", o.off, k)
			}
			used[k] = true
		}
		if c, ok := cls[o.slab]; ok && c != o.cls {
			m.t.Fatalf("slab %d holds objects of classes %v and %v", o.slab, c, o.cls)
		}
		cls[o.slab] = o.cls
		count[o.slab]++
	}
	return used, count, cls
}

// fits says whether the model expects an allocation of class c to
// succeed, given the objects that occupy the pool.
func (m *propModel) fits(c propClass, objs []*propObj) bool {
	used, count, cls := m.occupancy(objs)
	extent, slots := m.slabGeometry(c)
	for head, n := range count {
		if cls[head] == c && uint32(n) < slots {
			return true
		}
	}
	return longestRun(used) >= extent
}

// longestRun returns the length of the longest run of free slabs.
func longestRun(used []bool) uint32 {
	longest, run := uint32(0), uint32(0)
	for _, u := range used {
		if u {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	return longest
}

// committed returns the live objects.
func (m *propModel) committed() []*propObj {
	var objs []*propObj
	for k := range m.live {
		for _, o := range m.live[k] {
			objs = append(objs, o)
		}
	}
	return objs
}

func (m *propModel) offset(p unsafe.Pointer) uint64 { return uint64(uintptr(p) - m.h.Base()) }

func (m *propModel) slabOf(off uint64) uint32 { return uint32((off - m.hdr.SlabOff) / m.hdr.SlabSize) }
