package layout

import (
	"bytes"
	"errors"
	"testing"
)

// TestSummaryTooManyShapes encodes a summary whose slabs all differ: it
// does not fit its region, and EncodeSummary says so without writing.
func TestSummaryTooManyShapes(t *testing.T) {
	h, err := NewHeader(Geometry{Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const n = 512
	if h.Slabs < n {
		t.Fatalf("a %d-byte pool has %d slabs", h.Size, h.Slabs)
	}
	s := Summary{Slabs: make([]SlabHeader, n)}
	for i := range s.Slabs {
		size := uint32(64 + 8*i)
		slots, off := SlabGeometry(h.SlabSize, size)
		s.Slabs[i] = SlabHeader{Kind: KindObjects, Type: 1, SlotSize: size, Slots: slots, DataOff: off, Extent: 1, Elems: 1}
	}
	b := bytes.Repeat([]byte{0xa5}, int(SummarySize(n)))
	before := bytes.Clone(b)
	if _, err := EncodeSummary(b, &s); !errors.Is(err, ErrSummaryTooBig) {
		t.Fatalf("encoding %d slabs of %d shapes into %d bytes: %v", n, n, len(b), err)
	}
	if !bytes.Equal(b, before) {
		t.Fatal("a summary that does not fit was partly written")
	}
	// Three slabs in four sharing shapes fits.
	for i := range s.Slabs {
		if i%4 != 0 {
			s.Slabs[i] = s.Slabs[0]
		}
	}
	n2, err := EncodeSummary(b, &s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSummary(b, &h)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size() != uint64(n2) || got.Shapes != n/4 {
		t.Fatalf("decoded %d shapes in %d bytes, encoded %d bytes", got.Shapes, got.Size(), n2)
	}
	for i := range s.Slabs {
		if got.Slabs[i] != s.Slabs[i] {
			t.Fatalf("slab %d: decoded %+v, encoded %+v", i, got.Slabs[i], s.Slabs[i])
		}
	}
}
