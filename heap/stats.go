package heap

import (
	"sort"

	"github.com/pmemgo/pmemgo/internal/layout"
)

// TypeStats is what the pool holds of one type.
type TypeStats struct {
	Name string
	// Slabs holding this type, as objects or arrays.
	Slabs int
	// Objects counts allocated slots: objects, or arrays of the type.
	Objects int
	// Bytes is the size of the allocated slots; Capacity that of all slots.
	Bytes, Capacity uint64
}

// Stats describes the pool.
type Stats struct {
	Size uint64
	// MaxSize is the size the pool may grow to; Growths counts the
	// growths of this open.
	MaxSize  uint64
	Growths  int
	SlabSize uint64
	// SlabsUsed is the number of slabs holding something, of SlabsTotal.
	SlabsUsed, SlabsTotal int
	Types                 []TypeStats
	// Tx counts what the write transactions of this open did; it is kept
	// after Close.
	Tx TxStats
}

// Stats returns slabs, objects and bytes per type.
func (h *Heap) Stats() Stats {
	defer h.readLock()()
	hdr := &h.pool.Header
	st := Stats{Size: hdr.Size, MaxSize: hdr.MaxSize, Growths: int(h.stats.growths), SlabSize: hdr.SlabSize, SlabsTotal: int(hdr.Slabs), Tx: h.txStats()}
	if h.closed {
		return st
	}
	byName := map[string]*TypeStats{}
	h.alloc.eachHead(func(_ uint32, sh *layout.SlabHeader, used uint32) {
		st.SlabsUsed += int(sh.Extent)
		ti := h.types.byID(sh.Type)
		name := "?"
		if ti != nil {
			name = ti.desc.Name
		}
		ts := byName[name]
		if ts == nil {
			ts = &TypeStats{Name: name}
			byName[name] = ts
		}
		ts.Slabs += int(sh.Extent)
		ts.Objects += int(used)
		ts.Bytes += uint64(used) * uint64(sh.SlotSize)
		ts.Capacity += uint64(sh.Slots) * uint64(sh.SlotSize)
	})
	for _, ts := range byName {
		st.Types = append(st.Types, *ts)
	}
	sort.Slice(st.Types, func(i, j int) bool { return st.Types[i].Name < st.Types[j].Name })
	return st
}
