package layout

import (
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// StateSize is the size of the heap state: one cache line.
const StateSize = 64

const stateMagic = 0x50414548 // "HEAP"

// State is the heap state: the mutable allocation-wide metadata. It changes
// only inside transactions, under the undo log.
type State struct {
	// Types is how many descriptors the type table holds.
	Types uint32
	// TypeBytes is how many bytes of the type table are used.
	TypeBytes uint64
	// RootOff is the pool offset of the root object, 0 for none.
	RootOff uint64
	// RootType is the type id of the root object.
	RootType uint32
	// SlabHigh is the high-water mark of the slabs: every slab in use lies
	// below it, and slabs at and above it are free and never read. It
	// comes down when the extents at the top are freed.
	SlabHigh uint32
}

const (
	sMagic     = 0
	sTypes     = 4
	sTypeBytes = 8
	sRootOff   = 16
	sRootType  = 24
	sSlabHigh  = 28
	sSum       = 56
)

// Encode writes s into b[:StateSize].
func (s *State) Encode(b []byte) {
	b = b[:StateSize]
	clear(b)
	le.PutUint32(b[sMagic:], stateMagic)
	le.PutUint32(b[sTypes:], s.Types)
	le.PutUint64(b[sTypeBytes:], s.TypeBytes)
	le.PutUint64(b[sRootOff:], s.RootOff)
	le.PutUint32(b[sRootType:], s.RootType)
	le.PutUint32(b[sSlabHigh:], s.SlabHigh)
	le.PutUint64(b[sSum:], xxhash.Sum64(b[:sSum]))
}

// DecodeState decodes and validates the heap state against the header.
func DecodeState(b []byte, h *Header) (State, error) {
	var s State
	b = b[:StateSize]
	if le.Uint32(b[sMagic:]) != stateMagic {
		return s, fmt.Errorf("heap state at offset %d: bad magic %#x: %w", StateOff, le.Uint32(b[sMagic:]), pmemgo.ErrCorrupt)
	}
	if sum, want := le.Uint64(b[sSum:]), xxhash.Sum64(b[:sSum]); sum != want {
		return s, fmt.Errorf("heap state at offset %d: checksum %#x, computed %#x: %w", StateOff, sum, want, pmemgo.ErrCorrupt)
	}
	s = State{
		Types:     le.Uint32(b[sTypes:]),
		TypeBytes: le.Uint64(b[sTypeBytes:]),
		RootOff:   le.Uint64(b[sRootOff:]),
		RootType:  le.Uint32(b[sRootType:]),
		SlabHigh:  le.Uint32(b[sSlabHigh:]),
	}
	switch {
	case s.TypeBytes > h.TypeSize:
		return s, fmt.Errorf("heap state: type table uses %d bytes of %d: %w", s.TypeBytes, h.TypeSize, pmemgo.ErrCorrupt)
	case uint64(s.SlabHigh) > h.Slabs:
		return s, fmt.Errorf("heap state: slab high-water mark %d beyond %d slabs: %w", s.SlabHigh, h.Slabs, pmemgo.ErrCorrupt)
	case s.RootOff != 0 && (s.RootOff < h.SlabOff || s.RootOff >= h.Size):
		return s, fmt.Errorf("heap state: root at offset %d is outside the slab region: %w", s.RootOff, pmemgo.ErrCorrupt)
	case s.RootType > s.Types:
		return s, fmt.Errorf("heap state: root type %d but only %d types: %w", s.RootType, s.Types, pmemgo.ErrCorrupt)
	}
	return s, nil
}

// OpenMarkOff is the offset of the open mark, a word in its own line after
// the heap state. It is non-zero from before the first header write of an
// open until Close has written both header slots. While it is zero both
// slots must be valid, so an invalid one is corruption; while it is set, one
// invalid slot may be a header write torn by a crash. Being one 8-byte
// store, the mark itself is never torn.
const OpenMarkOff = StateOff + StateSize

// OpenMark reads the open mark from b, which starts at OpenMarkOff.
func OpenMark(b []byte) uint64 { return le.Uint64(b) }

// SetOpenMark stores the open mark into b, which starts at OpenMarkOff.
func SetOpenMark(b []byte, v uint64) { le.PutUint64(b, v) }
