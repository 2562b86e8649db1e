package crashtest

import (
	"fmt"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// locate names the first word of line off of the pool mapped in work that
// differs from durable, as the checker names places: "pool offset 327880,
// slab 4 object 3 (main.Map) field Count". Lints use it, so it does its
// best with what decodes and never fails.
func locate(work []byte, off int, durable []byte) string {
	for w := off; w < off+device.LineSize && w+8 <= len(work); w += 8 {
		if string(work[w:w+8]) != string(durable[w:w+8]) {
			off = w
			break
		}
	}
	where := fmt.Sprintf("pool offset %d", off)
	h, ok := currentHeader(work)
	if !ok {
		return where
	}
	if name := metaRegion(&h, uint64(off)); name != "" {
		return where + ", " + name
	}
	st, err := layout.DecodeState(work[layout.StateOff:], &h)
	if err != nil || h.TypeOff+st.TypeBytes > uint64(len(work)) {
		return where
	}
	types, err := layout.DecodeTypeTable(work[h.TypeOff:h.TypeOff+st.TypeBytes], st.Types, h.TypeOff)
	if err != nil {
		return where
	}
	if s := slotName(work, &h, types, uint64(off)); s != "" {
		return where + ", " + s
	}
	return where
}

// currentHeader decodes the header slot the pool is read by: the valid
// one with the higher sequence number.
func currentHeader(mem []byte) (layout.Header, bool) {
	var best layout.Header
	found := false
	for i := range 2 {
		o := layout.SlotOff(i)
		if int(o)+layout.HeaderBytes > len(mem) {
			continue
		}
		h, err := layout.DecodeHeader(mem[o:])
		if err == nil && (!found || h.Seq > best.Seq) {
			best, found = h, true
		}
	}
	return best, found
}

// metaRegion names the metadata region off is in, or "" for the slabs.
func metaRegion(h *layout.Header, off uint64) string {
	in := func(start, n uint64) bool { return off >= start && off < start+n }
	switch {
	case off < layout.StateOff:
		return "the pool header"
	case off < layout.MetaEnd:
		return "the heap state"
	case in(h.TypeOff, h.TypeSize):
		return "the type table"
	case in(h.SumOff, h.SumSize):
		return "the slab summary"
	case in(h.LogOff, h.LogSize):
		return "the undo log"
	case off < h.SlabOff:
		return "the pool metadata"
	}
	return ""
}

// slotName names the slot, element and field holding off.
func slotName(mem []byte, h *layout.Header, types []layout.TypeDesc, off uint64) string {
	idx, ok := h.SlabIndex(off)
	if !ok {
		return ""
	}
	// A slab of a large object covers several slabs with one header, in
	// the first.
	for i := int64(idx); i >= 0; i-- {
		so := h.SlabOffset(uint32(i))
		sh, err := layout.DecodeSlabHeader(mem[so:], h.SlabOff+h.Slabs*h.SlabSize-so, h.SlabSize)
		if err != nil {
			continue
		}
		if sh.Kind == layout.KindFree || uint64(i)+uint64(sh.Extent) <= uint64(idx) {
			return fmt.Sprintf("slab %d, which is free", idx)
		}
		if sh.Type == 0 || int(sh.Type) > len(types) {
			return ""
		}
		td := &types[sh.Type-1]
		data := so + uint64(sh.DataOff)
		if off < data {
			return fmt.Sprintf("slab %d header", i)
		}
		slot := (off - data) / uint64(sh.SlotSize)
		in := off - data - slot*uint64(sh.SlotSize)
		elem, inElem := in/uint64(td.Size), in%uint64(td.Size)
		where := fmt.Sprintf("slab %d object %d (%s)", i, slot, td.Name)
		if sh.Kind == layout.KindArray {
			where = fmt.Sprintf("slab %d array %d element %d (%s)", i, slot, elem, td.Name)
		}
		for _, f := range td.Fields {
			if inElem >= uint64(f.Offset) && inElem < uint64(f.Offset)+uint64(f.Size) && f.Path != "" {
				return where + " field " + f.Path
			}
		}
		return where
	}
	return ""
}
