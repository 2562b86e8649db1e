package layout

import (
	"fmt"
)

// SlabOffset returns the pool offset of slab i.
func (h *Header) SlabOffset(i uint32) uint64 { return h.SlabOff + uint64(i)*h.SlabSize }

// SlabIndex returns the slab that pool offset off falls in, and false when
// off is outside the slab region.
func (h *Header) SlabIndex(off uint64) (uint32, bool) {
	if off < h.SlabOff || off >= h.SlabOff+h.Slabs*h.SlabSize {
		return 0, false
	}
	return uint32((off - h.SlabOff) / h.SlabSize), true
}

// SlabError names the slab a problem was found in.
type SlabError struct {
	Slab   uint32
	Offset uint64
	Err    error
}

func (e *SlabError) Error() string {
	return fmt.Sprintf("slab %d at offset %d: %v", e.Slab, e.Offset, e.Err)
}

func (e *SlabError) Unwrap() error { return e.Err }

// WalkSlabs decodes the headers of slabs [0, high) in order, skipping the
// slabs an extent covers, and calls fn for each slab that holds something.
// A header that fails to decode is reported to fn as a *SlabError; since an
// undecodable header gives no extent, the walk then goes on with the next
// slab. fn returns false to stop.
func WalkSlabs(mem []byte, h *Header, high uint32, fn func(i uint32, sh *SlabHeader, err error) bool) {
	for i := uint32(0); i < high; {
		off := h.SlabOffset(i)
		sh, err := DecodeSlabHeader(mem[off:], h.SlabOff+h.Slabs*h.SlabSize-off, h.SlabSize)
		if err != nil {
			if !fn(i, nil, &SlabError{Slab: i, Offset: off, Err: err}) {
				return
			}
			i++
			continue
		}
		if sh.Kind == KindFree {
			i++
			continue
		}
		if !fn(i, &sh, nil) {
			return
		}
		i += sh.Extent
	}
}
