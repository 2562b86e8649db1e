package layout

import (
	"fmt"

	"github.com/pmemgo/pmemgo"
)

// Defaults for pool creation.
const (
	DefaultSlabSize = 64 << 10
	DefaultTypeSize = 64 << 10
	// MinPoolSize is the smallest pool Create accepts.
	MinPoolSize = 1 << 20
)

// Geometry is what a caller chooses when creating a pool.
type Geometry struct {
	Size     uint64
	SlabSize uint64 // 0: DefaultSlabSize
	LogSize  uint64 // 0: Size/16, clamped to [128 KiB, 64 MiB]
	TypeSize uint64 // 0: DefaultTypeSize
	// MaxSize is the size the pool may grow to, at least Size; 0 leaves
	// the limit to be chosen at open.
	MaxSize uint64
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// NewHeader lays out a pool of the given geometry and returns its header,
// with Seq 1 and no base yet.
func NewHeader(g Geometry) (Header, error) {
	if g.SlabSize == 0 {
		g.SlabSize = DefaultSlabSize
	}
	if g.TypeSize == 0 {
		g.TypeSize = DefaultTypeSize
	}
	if g.LogSize == 0 {
		g.LogSize = min(max(g.Size/16, 128<<10), 64<<20)
	}
	if g.Size < MinPoolSize {
		return Header{}, &GeometryError{Field: "Size", Value: g.Size, Reason: fmt.Sprintf("is below the minimum of %d bytes (1 MiB)", MinPoolSize)}
	}
	if g.MaxSize != 0 && g.MaxSize < g.Size {
		return Header{}, &GeometryError{Field: "MaxSize", Value: g.MaxSize, Reason: fmt.Sprintf("is below the pool size (Size %d)", g.Size)}
	}
	if g.SlabSize < MinSlabSize || g.SlabSize > MaxSlabSize || g.SlabSize&(g.SlabSize-1) != 0 {
		return Header{}, &GeometryError{Field: "SlabSize", Value: g.SlabSize, Reason: fmt.Sprintf("is not a power of two from %d to %d bytes", MinSlabSize, MaxSlabSize)}
	}
	h := Header{
		Version:  Version,
		Size:     g.Size,
		MaxSize:  g.MaxSize,
		Seq:      1,
		TypeOff:  MetaEnd,
		TypeSize: alignUp(g.TypeSize, 4096),
		SlabSize: g.SlabSize,
	}
	// The summary is sized for as many slabs as the whole pool could
	// hold, which bounds the count the rest of the layout leaves.
	h.SumOff = h.TypeOff + h.TypeSize
	h.SumSize = SummarySize(g.Size / g.SlabSize)
	h.LogOff = h.SumOff + h.SumSize
	h.LogSize = alignUp(g.LogSize, 4096)
	h.SlabOff = alignUp(h.LogOff+h.LogSize, h.SlabSize)
	if h.SlabOff+h.SlabSize > h.Size {
		meta := h.LogOff + h.LogSize
		if h.LogSize > g.Size {
			return Header{}, &GeometryError{Field: "LogSize", Value: g.LogSize, Reason: fmt.Sprintf("is larger than the pool (Size %d)", g.Size)}
		}
		return Header{}, &GeometryError{Field: "Size", Value: g.Size, Reason: fmt.Sprintf(
			"leaves no room for a slab: the metadata, with an undo log of %d bytes, takes %d bytes and a slab %d more (a smaller undo log or slab helps)",
			h.LogSize, meta, h.SlabSize)}
	}
	h.Slabs = (h.Size - h.SlabOff) / h.SlabSize
	if err := h.Validate(); err != nil {
		return Header{}, fmt.Errorf("pool geometry: %w: %w", err, pmemgo.ErrInvalidOptions)
	}
	return h, nil
}

// GeometryError is a pool geometry NewHeader refuses: Field is the
// Geometry field at fault (Size, MaxSize, SlabSize or LogSize), Value its value,
// and Reason says what is wrong with it, limit included. It wraps
// pmemgo.ErrInvalidOptions.
type GeometryError struct {
	Field  string
	Value  uint64
	Reason string
}

var geometryNames = map[string]string{"Size": "pool size", "SlabSize": "slab size", "LogSize": "undo log size", "MaxSize": "maximum pool size"}

func (e *GeometryError) Error() string {
	return fmt.Sprintf("%s %d %s: %v", geometryNames[e.Field], e.Value, e.Reason, pmemgo.ErrInvalidOptions)
}

func (e *GeometryError) Unwrap() error { return pmemgo.ErrInvalidOptions }
