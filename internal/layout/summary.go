package layout

import (
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
//	[0, 64)             summary header: magic, slab count, bindings, checksums
//	[64, 64+32*count)   one entry per slab below the high-water mark: the
//	                    head of an extent has its header fields, a free slab
//	                    and a slab inside an extent are all zeros
const (
	SummaryHeaderSize = 64
	SummaryEntrySize  = 32
)

const summaryMagic = 0x4d4d5553 // "SUMM"

// Offsets in the summary header.
const (
	smMagic      = 0
	smCount      = 4
	smLogGen     = 8
	smHeaderSeq  = 16
	smEntriesSum = 24
	smSum        = 56
)

// Offsets in a summary entry.
const (
	seKind     = 0
	seType     = 4
	seSlotSize = 8
	seSlots    = 12
	seUsed     = 16
	seDataOff  = 20
	seExtent   = 24
	seElems    = 28
)

// SummarySize returns the size of a summary region for a pool of n slabs.
func SummarySize(n uint64) uint64 {
	return alignUp(SummaryHeaderSize+n*SummaryEntrySize, 4096)
}

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
}

// EncodeSummary writes s into b, which must hold
// SummarySize(len(s.Slabs)) bytes, and returns the bytes used.
func EncodeSummary(b []byte, s *Summary) int {
	n := SummaryHeaderSize + len(s.Slabs)*SummaryEntrySize
	b = b[:n]
	clear(b[:SummaryHeaderSize])
	for i := range s.Slabs {
		e := b[SummaryHeaderSize+i*SummaryEntrySize:][:SummaryEntrySize]
		clear(e)
		sh := &s.Slabs[i]
		if sh.Kind == KindFree {
			continue
		}
		e[seKind] = sh.Kind
		le.PutUint32(e[seType:], sh.Type)
		le.PutUint32(e[seSlotSize:], sh.SlotSize)
		le.PutUint32(e[seSlots:], sh.Slots)
		le.PutUint32(e[seUsed:], sh.Used)
		le.PutUint32(e[seDataOff:], sh.DataOff)
		le.PutUint32(e[seExtent:], sh.Extent)
		le.PutUint32(e[seElems:], sh.Elems)
	}
	le.PutUint32(b[smMagic:], summaryMagic)
	le.PutUint32(b[smCount:], uint32(len(s.Slabs)))
	le.PutUint64(b[smLogGen:], s.LogGen)
	le.PutUint64(b[smHeaderSeq:], s.HeaderSeq)
	le.PutUint64(b[smEntriesSum:], xxhash.Sum64(b[SummaryHeaderSize:]))
	le.PutUint64(b[smSum:], xxhash.Sum64(b[:smSum]))
	return n
}

// ClearSummary invalidates the summary at b with one 8-byte store.
func ClearSummary(b []byte) { le.PutUint64(b[smMagic:], 0) }

// SummaryPresent reports whether b starts with a summary header, valid or
// not: a pool never closed cleanly has none.
func SummaryPresent(b []byte) bool { return le.Uint32(b[smMagic:]) != 0 }

// DecodeSummary decodes and validates the summary region b of the pool
// described by h: its checksums, its slab count against the pool, and
// every entry as DecodeSlabHeader would check a header, with extents that
// stay inside the summarised slabs and do not overlap. Whether the summary
// is bound to the pool's current state is the caller's question.
func DecodeSummary(b []byte, h *Header) (Summary, error) {
	head, err := ReadSummaryHead(b, h)
	if err != nil {
		return Summary{}, err
	}
	s := Summary{LogGen: head.LogGen, HeaderSeq: head.HeaderSeq, Slabs: make([]SlabHeader, head.Count)}
	if err := WalkSummary(b, h, head.Count, func(i uint32, sh SlabHeader) { s.Slabs[i] = sh }); err != nil {
		return Summary{}, err
	}
	return s, nil
}

// SummaryHead is what a summary's header says.
type SummaryHead struct {
	// Count is the number of entries, one per slab below the high-water
	// mark at the clean close; LogGen and HeaderSeq are as in Summary.
	Count, LogGen, HeaderSeq uint64
}

// summaryError names the summary of the pool h describes in an error.
func summaryError(h *Header, format string, args ...any) error {
	return fmt.Errorf("slab summary at offset %d: "+format+": %w", append(append([]any{h.SumOff}, args...), pmemgo.ErrCorrupt)...)
}

// ReadSummaryHead validates the header of the summary region b of the
// pool described by h, its entry count and the checksum of its entries,
// and returns what the header says. WalkSummary then decodes the entries.
func ReadSummaryHead(b []byte, h *Header) (SummaryHead, error) {
	if len(b) < SummaryHeaderSize {
		return SummaryHead{}, summaryError(h, "region of %d bytes", len(b))
	}
	if m := le.Uint32(b[smMagic:]); m != summaryMagic {
		return SummaryHead{}, summaryError(h, "bad magic %#x", m)
	}
	if sum, want := le.Uint64(b[smSum:]), xxhash.Sum64(b[:smSum]); sum != want {
		return SummaryHead{}, summaryError(h, "header checksum %#x, computed %#x", sum, want)
	}
	count := uint64(le.Uint32(b[smCount:]))
	if count > h.Slabs || SummaryHeaderSize+count*SummaryEntrySize > uint64(len(b)) {
		return SummaryHead{}, summaryError(h, "%d entries, the pool has %d slabs and room for %d", count, h.Slabs, (uint64(len(b))-SummaryHeaderSize)/SummaryEntrySize)
	}
	entries := b[SummaryHeaderSize : SummaryHeaderSize+count*SummaryEntrySize]
	if sum, want := le.Uint64(b[smEntriesSum:]), xxhash.Sum64(entries); sum != want {
		return SummaryHead{}, summaryError(h, "entries checksum %#x, computed %#x", sum, want)
	}
	return SummaryHead{Count: count, LogGen: le.Uint64(b[smLogGen:]), HeaderSeq: le.Uint64(b[smHeaderSeq:])}, nil
}

// WalkSummary decodes the count entries of the summary region b, whose
// header ReadSummaryHead accepted, checking each as DecodeSlabHeader would
// check a header and that extents stay inside the summarised slabs and do
// not overlap. It calls fn with each extent head's entry (by value, so
// that a walk allocates nothing), in index order,
// until an entry fails (fn may have seen the entries before it).
func WalkSummary(b []byte, h *Header, count uint64, fn func(i uint32, sh SlabHeader)) error {
	entries := b[SummaryHeaderSize : SummaryHeaderSize+count*SummaryEntrySize]
	covered := uint64(0) // slabs before this index belong to an earlier extent
	for i := range count {
		e := entries[i*SummaryEntrySize:][:SummaryEntrySize]
		sh := SlabHeader{
			Kind:     e[seKind],
			Type:     le.Uint32(e[seType:]),
			SlotSize: le.Uint32(e[seSlotSize:]),
			Slots:    le.Uint32(e[seSlots:]),
			Used:     le.Uint32(e[seUsed:]),
			DataOff:  le.Uint32(e[seDataOff:]),
			Extent:   le.Uint32(e[seExtent:]),
			Elems:    le.Uint32(e[seElems:]),
		}
		if sh.Kind == KindFree {
			if sh != (SlabHeader{}) || e[1] != 0 || e[2] != 0 || e[3] != 0 {
				return summaryError(h, "entry %d: a free entry with nonzero fields", i)
			}
			continue
		}
		if i < covered {
			return summaryError(h, "entry %d: slab is inside the extent of an earlier slab", i)
		}
		if e[1] != 0 || e[2] != 0 || e[3] != 0 {
			return summaryError(h, "entry %d: nonzero padding", i)
		}
		if err := checkSlabFields(&sh, count-i, h.SlabSize); err != nil {
			return summaryError(h, "entry %d: %v", i, err)
		}
		covered = i + uint64(sh.Extent)
		fn(uint32(i), sh)
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
