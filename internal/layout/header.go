// Package layout is the on-media format of a pool: where each piece of
// metadata lives, how it is encoded and how it is checksummed. It is the
// only package that knows byte offsets of metadata; everything else reads
// fields through the accessors here.
//
// A pool file is laid out as follows (all integers little-endian):
//
//	[0, 4096)          header slot A
//	[4096, 8192)       header slot B
//	[8192, 8256)       heap state: root, slab high-water mark, type count
//	[TypeOff, +TypeSize) type table: checksummed type descriptors
//	[SumOff, +SumSize)   slab summary: every slab header, written at a clean close
//	[LogOff, +LogSize)   undo log: generation word, then entries
//	[SlabOff, Size)      slabs of SlabSize bytes each
//
// A pool that grew keeps its slab summary after the slabs instead, since
// the summary must cover every slab and the slabs cannot move:
//
//	[SlabOff, +Slabs*SlabSize) slabs
//	[SumOff, +SumSize)         slab summary, SumOff >= the end of the slabs
//
// The two header slots are written alternately, each with a sequence
// number, so that a torn header write leaves the other slot intact.
package layout

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// Version is the format version this package reads and writes.
const Version = 2

// Magic starts both header slots of every pool file.
const Magic = "PMEMGO\x00\x01"

const (
	// SlotSize is the space reserved for one header slot.
	SlotSize = 4096
	// HeaderBytes is the part of a slot that is used and checksummed.
	HeaderBytes = 512
	// StateOff is the offset of the heap state line.
	StateOff = 2 * SlotSize
	// MetaEnd is where the type table may start.
	MetaEnd = StateOff + 4096
	// MaxRelocations bounds the relocation table: how many interrupted
	// swizzles in a row a pool can resume from.
	MaxRelocations = 16
	// MinSlabSize and MaxSlabSize bound Header.SlabSize.
	MinSlabSize = 16 << 10
	MaxSlabSize = 16 << 20
)

// Header flags.
const (
	// FlagSwizzling is set while pointers are being rewritten for Target.
	FlagSwizzling uint32 = 1 << iota
)

// Header is the decoded content of a header slot.
type Header struct {
	Version uint32
	Flags   uint32
	UUID    [16]byte
	Size    uint64
	// Seq orders the two slots: the valid slot with the higher Seq wins.
	Seq uint64
	// Base is the address every stored pointer is relative to, unless a
	// swizzle is in progress.
	Base uint64
	// Target is the base a swizzle in progress rewrites pointers for.
	Target uint64
	// SwizzleGen counts swizzles; a slab whose generation equals it while
	// FlagSwizzling is set has been rewritten already.
	SwizzleGen uint64
	// Epoch identifies the primary incarnation, for replication.
	Epoch uint64
	// MaxSize is the size the pool may grow to; zero, in a pool made
	// before pools could grow, means the limit is chosen at open.
	MaxSize  uint64
	TypeOff  uint64
	TypeSize uint64
	SumOff   uint64
	SumSize  uint64
	LogOff   uint64
	LogSize  uint64
	SlabOff  uint64
	SlabSize uint64
	Slabs    uint64
	// Old lists, during a swizzle, every base that pointers not yet
	// rewritten may be relative to. The ranges are pairwise disjoint and
	// disjoint from Target, so each pointer has one reading.
	Old []uint64
}

// Byte offsets inside a header slot.
const (
	hMagic    = 0
	hVersion  = 8
	hFlags    = 12
	hUUID     = 16
	hSize     = 32
	hSeq      = 40
	hBase     = 48
	hTarget   = 56
	hGen      = 64
	hEpoch    = 72
	hTypeOff  = 80
	hTypeSize = 88
	hLogOff   = 96
	hLogSize  = 104
	hSlabOff  = 112
	hSlabSize = 120
	hSlabs    = 128
	hNOld     = 136
	hOld      = 144
	hSumOff   = hOld + 8*MaxRelocations
	hSumSize  = hSumOff + 8
	hMaxSize  = hSumSize + 8
	hSum      = HeaderBytes - 8
)

var le = binary.LittleEndian

// SlotOff returns the file offset of header slot i (0 or 1).
func SlotOff(i int) int64 { return int64(i) * SlotSize }

// Encode writes h into b, which must hold HeaderBytes bytes.
func (h *Header) Encode(b []byte) {
	b = b[:HeaderBytes]
	clear(b)
	copy(b[hMagic:], Magic)
	le.PutUint32(b[hVersion:], h.Version)
	le.PutUint32(b[hFlags:], h.Flags)
	copy(b[hUUID:], h.UUID[:])
	for _, f := range []struct {
		off int
		v   uint64
	}{
		{hSize, h.Size}, {hSeq, h.Seq}, {hBase, h.Base}, {hTarget, h.Target},
		{hGen, h.SwizzleGen}, {hEpoch, h.Epoch}, {hTypeOff, h.TypeOff},
		{hTypeSize, h.TypeSize}, {hLogOff, h.LogOff}, {hLogSize, h.LogSize},
		{hSlabOff, h.SlabOff}, {hSlabSize, h.SlabSize}, {hSlabs, h.Slabs},
		{hSumOff, h.SumOff}, {hSumSize, h.SumSize}, {hMaxSize, h.MaxSize},
	} {
		le.PutUint64(b[f.off:], f.v)
	}
	le.PutUint32(b[hNOld:], uint32(len(h.Old)))
	for i, o := range h.Old {
		le.PutUint64(b[hOld+8*i:], o)
	}
	le.PutUint64(b[hSum:], xxhash.Sum64(b[:hSum]))
}

// DecodeHeader decodes and validates one header slot. The error wraps
// pmemgo.ErrNotPool, ErrVersion or ErrCorrupt and says what is wrong.
func DecodeHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderBytes {
		return h, fmt.Errorf("header: %d bytes, need %d: %w", len(b), HeaderBytes, pmemgo.ErrTruncated)
	}
	if string(b[hMagic:hMagic+8]) != Magic {
		return h, fmt.Errorf("header: magic %q: %w", b[hMagic:hMagic+8], pmemgo.ErrNotPool)
	}
	if sum, want := le.Uint64(b[hSum:]), xxhash.Sum64(b[:hSum]); sum != want {
		return h, fmt.Errorf("header: checksum %#x, computed %#x: %w", sum, want, pmemgo.ErrCorrupt)
	}
	h.Version = le.Uint32(b[hVersion:])
	if h.Version != Version {
		return h, fmt.Errorf("header: format version %d, this build reads %d: %w", h.Version, Version, pmemgo.ErrVersion)
	}
	h.Flags = le.Uint32(b[hFlags:])
	copy(h.UUID[:], b[hUUID:])
	for _, f := range []struct {
		off int
		v   *uint64
	}{
		{hSize, &h.Size}, {hSeq, &h.Seq}, {hBase, &h.Base}, {hTarget, &h.Target},
		{hGen, &h.SwizzleGen}, {hEpoch, &h.Epoch}, {hTypeOff, &h.TypeOff},
		{hTypeSize, &h.TypeSize}, {hLogOff, &h.LogOff}, {hLogSize, &h.LogSize},
		{hSlabOff, &h.SlabOff}, {hSlabSize, &h.SlabSize}, {hSlabs, &h.Slabs},
		{hSumOff, &h.SumOff}, {hSumSize, &h.SumSize}, {hMaxSize, &h.MaxSize},
	} {
		*f.v = le.Uint64(b[f.off:])
	}
	n := le.Uint32(b[hNOld:])
	if n > MaxRelocations {
		return h, fmt.Errorf("header: relocation table has %d entries, at most %d: %w", n, MaxRelocations, pmemgo.ErrCorrupt)
	}
	for i := range int(n) {
		h.Old = append(h.Old, le.Uint64(b[hOld+8*i:]))
	}
	if err := h.Validate(); err != nil {
		return h, fmt.Errorf("header: %w: %w", err, pmemgo.ErrCorrupt)
	}
	return h, nil
}

// Validate checks that the regions a header describes are in order, aligned
// and inside the pool, and that the relocation state is coherent.
func (h *Header) Validate() error {
	if h.SlabSize < MinSlabSize || h.SlabSize > MaxSlabSize || h.SlabSize&(h.SlabSize-1) != 0 {
		return fmt.Errorf("slab size %d is not a power of two in [%d, %d]", h.SlabSize, MinSlabSize, MaxSlabSize)
	}
	type region struct {
		name      string
		off, size uint64
	}
	regions := []region{
		{"type table", h.TypeOff, h.TypeSize},
		{"slab summary", h.SumOff, h.SumSize},
		{"undo log", h.LogOff, h.LogSize},
		{"slabs", h.SlabOff, h.Slabs * h.SlabSize},
	}
	if h.SumOff > h.LogOff {
		// A pool that grew: the summary follows the slabs.
		regions = []region{regions[0], regions[2], regions[3], regions[1]}
	}
	if h.MaxSize != 0 && h.MaxSize < h.Size {
		return fmt.Errorf("maximum size %d is below the pool size %d", h.MaxSize, h.Size)
	}
	end := uint64(MetaEnd)
	for _, r := range regions {
		if r.off < end || r.off%4096 != 0 || r.size == 0 || r.size%64 != 0 || r.off+r.size > h.Size || r.off+r.size < r.off {
			return fmt.Errorf("%s [%d, +%d) is misplaced (previous region ends at %d, pool size %d)", r.name, r.off, r.size, end, h.Size)
		}
		end = r.off + r.size
	}
	if h.SlabOff%h.SlabSize != 0 {
		return fmt.Errorf("slab region offset %d is not a multiple of the slab size %d", h.SlabOff, h.SlabSize)
	}
	if h.Slabs > 1<<31 {
		return fmt.Errorf("%d slabs is more than the format allows", h.Slabs)
	}
	if !SummaryFits(h.SumSize, h.Slabs) {
		return fmt.Errorf("slab summary of %d bytes cannot describe %d slabs", h.SumSize, h.Slabs)
	}
	if h.Flags&FlagSwizzling == 0 && len(h.Old) != 0 {
		return fmt.Errorf("relocation table has %d entries but no swizzle is in progress", len(h.Old))
	}
	if h.Flags&FlagSwizzling != 0 {
		if len(h.Old) == 0 {
			return fmt.Errorf("swizzle in progress with an empty relocation table")
		}
		all := append([]uint64{h.Target}, h.Old...)
		for i := range all {
			for j := range i {
				if all[i] < all[j]+h.Size && all[j] < all[i]+h.Size {
					return fmt.Errorf("relocation ranges at %#x and %#x overlap", all[j], all[i])
				}
			}
		}
	}
	return nil
}
