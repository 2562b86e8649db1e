package layout

import (
	"fmt"
	"math/bits"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// Slab kinds.
const (
	// KindFree marks a slab that holds nothing; its header is all zeros.
	KindFree = 0
	// KindObjects holds objects of one type, one per slot.
	KindObjects = 1
	// KindArray holds arrays (slice backing stores and string bytes) of one
	// element type, each slot a fixed number of elements.
	KindArray = 2
)

const slabMagic = 0x31424c53 // "SLB1"

// SlabHeaderSize is the fixed part of a slab header; the allocation bitmap
// follows it.
const SlabHeaderSize = 64

// Offsets in a slab header.
const (
	shMagic    = 0
	shKind     = 4
	shType     = 8
	shSlotSize = 12
	shSlots    = 16
	shUsed     = 20
	shDataOff  = 24
	shExtent   = 28
	shElems    = 32
	// shGen, the swizzle generation, is deliberately outside the checksum:
	// the swizzler updates it with one atomic 8-byte store, so a crash can
	// never leave it half-written against a checksum. It is a sealed word.
	shGen = 48
	shSum = 56
)

// SlabHeader is the decoded fixed part of a slab header.
type SlabHeader struct {
	Kind     uint8
	Type     uint32
	SlotSize uint32
	Slots    uint32
	Used     uint32
	DataOff  uint32
	// Extent is how many consecutive slabs this one covers: more than one
	// for an object larger than a slab. The slabs after the first carry no
	// header of their own.
	Extent uint32
	// Elems is the number of elements of Type per slot: 1 for objects.
	Elems uint32
	Gen   uint64
}

// BitmapBytes returns the size of the allocation bitmap for n slots,
// a whole number of 64-bit words.
func BitmapBytes(n uint32) uint32 { return uint32((uint64(n) + 63) / 64 * 8) }

// SlabGeometry returns how many slots of slotSize fit a slab (or extent) of
// span bytes, and where the first one starts. Slots start on a cache line.
func SlabGeometry(span uint64, slotSize uint32) (slots, dataOff uint32) {
	n := uint32((span - SlabHeaderSize) / uint64(slotSize))
	for n > 0 {
		off := uint32(alignUp(uint64(SlabHeaderSize+BitmapBytes(n)), 64))
		if uint64(off)+uint64(n)*uint64(slotSize) <= span {
			return n, off
		}
		n--
	}
	return 0, 0
}

// EncodeSlabHeader writes h into the slab at b, leaving the bitmap as it
// is, and recomputes the checksum over header and bitmap.
func EncodeSlabHeader(b []byte, h *SlabHeader) {
	le.PutUint32(b[shMagic:], slabMagic)
	b[shKind] = h.Kind
	b[shKind+1], b[shKind+2], b[shKind+3] = 0, 0, 0
	le.PutUint32(b[shType:], h.Type)
	le.PutUint32(b[shSlotSize:], h.SlotSize)
	le.PutUint32(b[shSlots:], h.Slots)
	le.PutUint32(b[shUsed:], h.Used)
	le.PutUint32(b[shDataOff:], h.DataOff)
	le.PutUint32(b[shExtent:], h.Extent)
	le.PutUint32(b[shElems:], h.Elems)
	clear(b[shElems+4 : shGen])
	SetSlabGen(b, h.Gen)
	SealSlab(b, h.Slots)
}

// SealSlab recomputes the checksum of a slab header with n slots after its
// used count or bitmap changed.
func SealSlab(b []byte, n uint32) {
	le.PutUint64(b[shSum:], slabSum(b, n))
}

func slabSum(b []byte, n uint32) uint64 {
	var d xxhash.Digest
	d.Reset()
	d.Write(b[:shGen])
	d.Write(b[SlabHeaderSize : SlabHeaderSize+BitmapBytes(n)])
	return d.Sum64()
}

// SetSlabUsed stores the used count; the caller reseals the header.
func SetSlabUsed(b []byte, used uint32) { le.PutUint32(b[shUsed:], used) }

// SetSlabGen stores the swizzle generation with one 8-byte store.
func SetSlabGen(b []byte, gen uint64) { le.PutUint64(b[shGen:], SealWord(gen)) }

// SlabGen reads the swizzle generation; false means its word is corrupt.
func SlabGen(b []byte) (uint64, bool) { return OpenWord(le.Uint64(b[shGen:])) }

// SlabIsFree reports whether the slab header is that of a free slab.
func SlabIsFree(b []byte) bool { return le.Uint32(b[shMagic:]) == 0 && b[shKind] == KindFree }

// DecodeSlabHeader decodes and validates a slab header. span is the bytes
// from the slab's start to the end of the slab region, which an extent must
// fit in. A free slab decodes with Kind KindFree.
func DecodeSlabHeader(b []byte, span uint64, slabSize uint64) (SlabHeader, error) {
	var h SlabHeader
	if SlabIsFree(b) {
		return h, nil
	}
	if m := le.Uint32(b[shMagic:]); m != slabMagic {
		return h, fmt.Errorf("bad magic %#x: %w", m, pmemgo.ErrCorrupt)
	}
	h = SlabHeader{
		Kind:     b[shKind],
		Type:     le.Uint32(b[shType:]),
		SlotSize: le.Uint32(b[shSlotSize:]),
		Slots:    le.Uint32(b[shSlots:]),
		Used:     le.Uint32(b[shUsed:]),
		DataOff:  le.Uint32(b[shDataOff:]),
		Extent:   le.Uint32(b[shExtent:]),
		Elems:    le.Uint32(b[shElems:]),
	}
	gen, ok := SlabGen(b)
	if !ok {
		return h, fmt.Errorf("swizzle generation word %#x fails its check: %w", le.Uint64(b[shGen:]), pmemgo.ErrCorrupt)
	}
	h.Gen = gen
	if h.Extent == 0 || uint64(h.Extent)*slabSize > span {
		return h, fmt.Errorf("extent of %d slabs does not fit the %d bytes left: %w", h.Extent, span, pmemgo.ErrCorrupt)
	}
	// The slots must fit before the checksum reads the bitmap they size.
	if err := slotsFit(&h, slabSize); err != nil {
		return h, fmt.Errorf("%w: %w", err, pmemgo.ErrCorrupt)
	}
	if sum, want := le.Uint64(b[shSum:]), slabSum(b, h.Slots); sum != want {
		return h, fmt.Errorf("checksum %#x, computed %#x: %w", sum, want, pmemgo.ErrCorrupt)
	}
	if err := kindAndCounts(&h); err != nil {
		return h, fmt.Errorf("%w: %w", err, pmemgo.ErrCorrupt)
	}
	bm := Bitmap(b, h.Slots)
	if tail := h.Slots % 64; tail != 0 && le.Uint64(bm[len(bm)-8:])>>tail != 0 {
		// The swizzler and the allocator walk set bits; one past the last
		// slot would send them beyond the slot area.
		return h, fmt.Errorf("bitmap marks slots past the last of %d: %w", h.Slots, pmemgo.ErrCorrupt)
	}
	if got := popcount(bm); got != h.Used {
		return h, fmt.Errorf("bitmap has %d slots set, header counts %d: %w", got, h.Used, pmemgo.ErrCorrupt)
	}
	return h, nil
}

// slotsFit checks that the slots of sh, with their bitmap, fit its extent.
func slotsFit(sh *SlabHeader, slabSize uint64) error {
	total := uint64(sh.Extent) * slabSize
	if sh.Slots == 0 || sh.SlotSize == 0 || uint64(SlabHeaderSize+BitmapBytes(sh.Slots)) > uint64(sh.DataOff) ||
		uint64(sh.DataOff)+uint64(sh.Slots)*uint64(sh.SlotSize) > total || sh.DataOff%8 != 0 {
		return fmt.Errorf("%d slots of %d bytes from offset %d do not fit %d bytes", sh.Slots, sh.SlotSize, sh.DataOff, total)
	}
	return nil
}

// kindAndCounts checks the kind, elements per slot and used count of sh.
func kindAndCounts(sh *SlabHeader) error {
	switch {
	case sh.Kind != KindObjects && sh.Kind != KindArray:
		return fmt.Errorf("unknown kind %d", sh.Kind)
	case sh.Elems == 0 || sh.Used > sh.Slots:
		return fmt.Errorf("%d elements per slot, %d of %d slots used", sh.Elems, sh.Used, sh.Slots)
	}
	return nil
}

// Bitmap returns the allocation bitmap words of a slab of n slots as bytes.
func Bitmap(b []byte, n uint32) []byte {
	return b[SlabHeaderSize : SlabHeaderSize+BitmapBytes(n)]
}

// BitmapWordOff returns the offset, from the slab start, of the bitmap word
// holding slot i.
func BitmapWordOff(i uint32) uint32 { return SlabHeaderSize + i/64*8 }

func popcount(bm []byte) uint32 {
	var n int
	for i := 0; i+8 <= len(bm); i += 8 {
		n += bits.OnesCount64(le.Uint64(bm[i:]))
	}
	return uint32(n)
}
