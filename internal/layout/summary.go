package layout

import (
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// The slab summary is a copy of every slab header (without bitmaps), kept
// in one contiguous region and written only when a pool is closed
// cleanly. Reopening such a pool at the same base reads the summary
// instead of a header on every slab's own page, so the open costs the same
// whatever the number of objects. It is a cache: it is trusted only while
// it is bound to the pool's current state (the open mark is clear and the
// undo log generation, header sequence and slab high-water mark are those
// it records), and a summary that fails any check is ignored, never acted
// on. Each slab's own header is still validated, against its summary
// entry, before anything in the slab is read or written through the
// allocator.
//
// A pool's slabs have few distinct headers but for the used count (one
// per class, extent size and element count), so each distinct header, a
// shape, is written once and a slab's entry names its shape: 8 bytes a
// slab, so that an open reads (and first touches) a quarter of the pages a
// copy of every header would take.
//
//	[0, 64)                 summary header: magic, slab and shape counts,
//	                        bindings, checksums
//	[64, +32*shapes)        the shapes: extent heads' header fields, the
//	                        used count zero
//	[.., +8*count)          one entry per slab below the high-water mark:
//	                        its shape number (from 1; 0 for a free slab and
//	                        for a slab inside an extent) and used count
const (
	SummaryHeaderSize = 64
	SummaryShapeSize  = 32
	SummaryEntrySize  = 8
	// summarySlabRoom is the room a summary region has for each slab of
	// the pool: an entry and a shape for up to three slabs in four.
	summarySlabRoom = 32
)

// summaryMagic is "SUM2"; summaryMagicV1 marked the summaries of earlier
// releases, one 32-byte header copy per slab, which are now stale.
const (
	summaryMagic   = 0x324d5553
	summaryMagicV1 = 0x4d4d5553
)

// Offsets in the summary header.
const (
	smMagic      = 0
	smCount      = 4
	smLogGen     = 8
	smHeaderSeq  = 16
	smEntriesSum = 24
	smShapes     = 32
	smSum        = 56
)

// Offsets in a shape.
const (
	ssKind     = 0
	ssType     = 4
	ssSlotSize = 8
	ssSlots    = 12
	ssDataOff  = 20
	ssExtent   = 24
	ssElems    = 28
)

// ErrSummaryTooBig says that a summary has too many distinct shapes for
// its region; the pool is then closed without one.
var ErrSummaryTooBig = errors.New("slab summary does not fit its region")

// ErrOldSummary says that a summary was written by an earlier release in
// a format this one does not read: it is stale, not damaged.
var ErrOldSummary = errors.New("slab summary is in an earlier format")

// SummarySize returns the size of a summary region for a pool of n slabs.
func SummarySize(n uint64) uint64 {
	return alignUp(SummaryHeaderSize+n*summarySlabRoom, 4096)
}

// SummaryFits reports whether a summary region of size bytes is large
// enough for a pool of n slabs.
func SummaryFits(size, n uint64) bool { return size >= SummaryHeaderSize+n*summarySlabRoom }

// Summary is the decoded slab summary.
type Summary struct {
	// LogGen and HeaderSeq bind the summary to the pool state it was
	// written for: the undo log generation and the header sequence number
	// at the clean close.
	LogGen, HeaderSeq uint64
	// Slabs has one entry per slab below the high-water mark, by index;
	// Kind is KindFree for a free slab and for a slab inside an extent.
	// Gen is not recorded and decodes as zero.
	Slabs []SlabHeader
	// Shapes is the number of shapes the decoded region holds; encoding
	// ignores it.
	Shapes uint64
}

// EntryOffset returns the offset, in the summary region, of the entry of
// slab i of a decoded summary.
func (s *Summary) EntryOffset(i uint32) int64 {
	return SummaryHeaderSize + int64(s.Shapes)*SummaryShapeSize + int64(i)*SummaryEntrySize
}

// Size returns the bytes of the summary region a decoded summary took.
func (s *Summary) Size() uint64 { return uint64(s.EntryOffset(uint32(len(s.Slabs)))) }

// EncodeSummary writes s into b, which must hold
// SummarySize(len(s.Slabs)) bytes, and returns the bytes used. It fails
// with ErrSummaryTooBig, writing nothing, when the slabs have so many
// distinct shapes that they do not fit b.
func EncodeSummary(b []byte, s *Summary) (int, error) {
	shapeOf := map[SlabHeader]uint32{}
	var shapes []SlabHeader
	for i := range s.Slabs {
		sh := s.Slabs[i]
		if sh.Kind == KindFree {
			continue
		}
		sh.Used, sh.Gen = 0, 0
		if _, ok := shapeOf[sh]; !ok {
			shapes = append(shapes, sh)
			shapeOf[sh] = uint32(len(shapes))
		}
	}
	entriesOff := SummaryHeaderSize + len(shapes)*SummaryShapeSize
	n := entriesOff + len(s.Slabs)*SummaryEntrySize
	if n > len(b) {
		return 0, fmt.Errorf("%d slabs of %d shapes take %d bytes, the region has %d: %w", len(s.Slabs), len(shapes), n, len(b), ErrSummaryTooBig)
	}
	b = b[:n]
	clear(b[:SummaryHeaderSize])
	for k := range shapes {
		e := b[SummaryHeaderSize+k*SummaryShapeSize:][:SummaryShapeSize]
		clear(e)
		sh := &shapes[k]
		e[ssKind] = sh.Kind
		le.PutUint32(e[ssType:], sh.Type)
		le.PutUint32(e[ssSlotSize:], sh.SlotSize)
		le.PutUint32(e[ssSlots:], sh.Slots)
		le.PutUint32(e[ssDataOff:], sh.DataOff)
		le.PutUint32(e[ssExtent:], sh.Extent)
		le.PutUint32(e[ssElems:], sh.Elems)
	}
	for i := range s.Slabs {
		e := b[entriesOff+i*SummaryEntrySize:][:SummaryEntrySize]
		sh := s.Slabs[i]
		if sh.Kind == KindFree {
			clear(e)
			continue
		}
		used := sh.Used
		sh.Used, sh.Gen = 0, 0
		le.PutUint32(e, shapeOf[sh])
		le.PutUint32(e[4:], used)
	}
	le.PutUint32(b[smMagic:], summaryMagic)
	le.PutUint32(b[smCount:], uint32(len(s.Slabs)))
	le.PutUint64(b[smLogGen:], s.LogGen)
	le.PutUint64(b[smHeaderSeq:], s.HeaderSeq)
	le.PutUint32(b[smShapes:], uint32(len(shapes)))
	le.PutUint64(b[smEntriesSum:], xxhash.Sum64(b[SummaryHeaderSize:]))
	le.PutUint64(b[smSum:], xxhash.Sum64(b[:smSum]))
	return n, nil
}

// ClearSummary invalidates the summary at b with one 8-byte store.
func ClearSummary(b []byte) { le.PutUint64(b[smMagic:], 0) }

// SummaryPresent reports whether b starts with a summary header, valid or
// not: a pool never closed cleanly has none.
func SummaryPresent(b []byte) bool { return le.Uint32(b[smMagic:]) != 0 }

// DecodeSummary decodes and validates the summary region b of the pool
// described by h: its checksums, its slab count against the pool, its
// shapes and every entry as DecodeSlabHeader would check a header, with
// extents that stay inside the summarised slabs and do not overlap.
// Whether the summary is bound to the pool's current state is the
// caller's question.
func DecodeSummary(b []byte, h *Header) (Summary, error) {
	head, err := ReadSummaryHead(b, h)
	if err != nil {
		return Summary{}, err
	}
	shapes, err := SummaryShapes(b, h, head)
	if err != nil {
		return Summary{}, err
	}
	s := Summary{LogGen: head.LogGen, HeaderSeq: head.HeaderSeq, Slabs: make([]SlabHeader, head.Count), Shapes: head.Shapes}
	err = WalkSummary(b, h, head, shapes, func(i, shape, used uint32) {
		s.Slabs[i] = shapes[shape]
		s.Slabs[i].Used = used
	})
	if err != nil {
		return Summary{}, err
	}
	return s, nil
}

// SummaryHead is what a summary's header says.
type SummaryHead struct {
	// Count is the number of entries, one per slab below the high-water
	// mark at the clean close; LogGen and HeaderSeq are as in Summary.
	Count, LogGen, HeaderSeq uint64
	// Shapes is the number of distinct extent-head headers.
	Shapes uint64
}

// summaryError names the summary of the pool h describes in an error.
func summaryError(h *Header, format string, args ...any) error {
	return fmt.Errorf("slab summary at offset %d: "+format+": %w", append(append([]any{h.SumOff}, args...), pmemgo.ErrCorrupt)...)
}

// ReadSummaryHead validates the header of the summary region b of the
// pool described by h, its entry and shape counts and the checksum of its
// shapes and entries, and returns what the header says. SummaryShapes
// and WalkSummary then decode the rest. A summary of an earlier format
// fails with ErrOldSummary.
func ReadSummaryHead(b []byte, h *Header) (SummaryHead, error) {
	if len(b) < SummaryHeaderSize {
		return SummaryHead{}, summaryError(h, "region of %d bytes", len(b))
	}
	switch m := le.Uint32(b[smMagic:]); m {
	case summaryMagic:
	case summaryMagicV1:
		return SummaryHead{}, fmt.Errorf("slab summary at offset %d: %w", h.SumOff, ErrOldSummary)
	default:
		return SummaryHead{}, summaryError(h, "bad magic %#x", m)
	}
	if sum, want := le.Uint64(b[smSum:]), xxhash.Sum64(b[:smSum]); sum != want {
		return SummaryHead{}, summaryError(h, "header checksum %#x, computed %#x", sum, want)
	}
	count := uint64(le.Uint32(b[smCount:]))
	shapes := uint64(le.Uint32(b[smShapes:]))
	end := SummaryHeaderSize + shapes*SummaryShapeSize + count*SummaryEntrySize
	if count > h.Slabs || shapes > count || end > uint64(len(b)) {
		return SummaryHead{}, summaryError(h, "%d entries of %d shapes, the pool has %d slabs and a region of %d bytes", count, shapes, h.Slabs, len(b))
	}
	if sum, want := le.Uint64(b[smEntriesSum:]), xxhash.Sum64(b[SummaryHeaderSize:end]); sum != want {
		return SummaryHead{}, summaryError(h, "entries checksum %#x, computed %#x", sum, want)
	}
	return SummaryHead{Count: count, LogGen: le.Uint64(b[smLogGen:]), HeaderSeq: le.Uint64(b[smHeaderSeq:]), Shapes: shapes}, nil
}

// SummaryShapes decodes and checks the shapes of the summary region b,
// whose header ReadSummaryHead accepted: each as DecodeSlabHeader would
// check a header with no slot used, its extent within the summarised
// slabs. Shape k is entries' shape number k+1.
func SummaryShapes(b []byte, h *Header, head SummaryHead) ([]SlabHeader, error) {
	shapes := make([]SlabHeader, head.Shapes)
	for k := range shapes {
		e := b[SummaryHeaderSize+k*SummaryShapeSize:][:SummaryShapeSize]
		sh := SlabHeader{
			Kind:     e[ssKind],
			Type:     le.Uint32(e[ssType:]),
			SlotSize: le.Uint32(e[ssSlotSize:]),
			Slots:    le.Uint32(e[ssSlots:]),
			DataOff:  le.Uint32(e[ssDataOff:]),
			Extent:   le.Uint32(e[ssExtent:]),
			Elems:    le.Uint32(e[ssElems:]),
		}
		if e[1] != 0 || e[2] != 0 || e[3] != 0 || le.Uint32(e[16:]) != 0 {
			return nil, summaryError(h, "shape %d: nonzero padding", k+1)
		}
		if err := checkSlabFields(&sh, head.Count, h.SlabSize); err != nil {
			return nil, summaryError(h, "shape %d: %v", k+1, err)
		}
		shapes[k] = sh
	}
	return shapes, nil
}

// WalkSummary walks the count entries of the summary region b, whose
// header ReadSummaryHead accepted and whose shapes SummaryShapes decoded,
// checking that each names a shape, uses no more slots than it has, and
// that extents stay inside the summarised slabs and do not overlap. It
// calls fn with each extent head's index, shape (an index into shapes)
// and used count, in index order, until an entry fails (fn may have seen
// the entries before it). It allocates nothing.
func WalkSummary(b []byte, h *Header, head SummaryHead, shapes []SlabHeader, fn func(i, shape, used uint32)) error {
	off := SummaryHeaderSize + head.Shapes*SummaryShapeSize
	entries := b[off : off+head.Count*SummaryEntrySize]
	covered := uint64(0) // slabs before this index belong to an earlier extent
	for i := range head.Count {
		e := entries[i*SummaryEntrySize:][:SummaryEntrySize]
		shape, used := le.Uint32(e), le.Uint32(e[4:])
		if shape == 0 {
			if used != 0 {
				return summaryError(h, "entry %d: a free entry with %d slots used", i, used)
			}
			continue
		}
		if i < covered {
			return summaryError(h, "entry %d: slab is inside the extent of an earlier slab", i)
		}
		if uint64(shape) > uint64(len(shapes)) {
			return summaryError(h, "entry %d: shape %d, the summary has %d", i, shape, len(shapes))
		}
		sh := &shapes[shape-1]
		if uint64(sh.Extent) > head.Count-i || used > sh.Slots {
			return summaryError(h, "entry %d: %d of %d slots used, extent of %d slabs, %d left", i, used, sh.Slots, sh.Extent, head.Count-i)
		}
		covered = i + uint64(sh.Extent)
		fn(uint32(i), shape-1, used)
	}
	return nil
}

// checkSlabFields checks the fields of a slab header that an entry
// records, for a slab with span slabs up to the end of what is described.
func checkSlabFields(sh *SlabHeader, span, slabSize uint64) error {
	if sh.Extent == 0 || uint64(sh.Extent) > span {
		return fmt.Errorf("extent of %d slabs, %d left", sh.Extent, span)
	}
	if err := slotsFit(sh, slabSize); err != nil {
		return err
	}
	return kindAndCounts(sh)
}

// SameSlab reports whether a slab header agrees with its summary entry in
// every field the entry records.
func SameSlab(sh, entry *SlabHeader) bool {
	a, b := *sh, *entry
	a.Gen, b.Gen = 0, 0
	return a == b
}
