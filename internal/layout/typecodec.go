package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cespare/xxhash/v2"
)

// A type descriptor is encoded as
//
//	format byte (typeDescFormat)
//	name            string
//	size, align     uvarint
//	field count     uvarint, then per field: path string, offset uvarint,
//	                size uvarint, type string
//	pointer count   uvarint, then per pointer: offset uvarint, kind byte,
//	                target string, field string
//	hash            8 bytes little-endian: xxhash64 of everything before it
//
// where a string is a uvarint length followed by that many bytes. Every
// uvarint is minimally encoded, so a descriptor has exactly one encoding and
// the hash of a decoded descriptor is the hash of the bytes it came from.

// typeDescFormat is the version byte that starts every encoded descriptor.
const typeDescFormat = 1

const (
	typeDescHashLen = 8
	// The smallest encodings of a field and of a pointer (every number and
	// string length one byte). Counts are checked against them so that a
	// corrupt count cannot make the decoder allocate more than the input
	// could hold.
	minFieldLen   = 4
	minPointerLen = 4
	// minTypeDescLen is the smallest possible descriptor: format, name
	// length, size, align, two counts and the hash.
	minTypeDescLen = 6 + typeDescHashLen
	// MaxTypeAlign is the largest alignment a descriptor may record.
	MaxTypeAlign = 4096
)

// ptrWordSize is the size of a pointer word on the platforms pmemgo supports.
const ptrWordSize = 8

// String returns the name of the kind as it appears in messages.
func (k PtrKind) String() string {
	switch k {
	case PtrObject:
		return "object"
	case PtrUnsafe:
		return "unsafe"
	case PtrString:
		return "string"
	case PtrSlice:
		return "slice"
	}
	return fmt.Sprintf("PtrKind(%d)", uint8(k))
}

// Words returns how many words the header a pointer of kind k starts takes:
// the pointer itself, then a string's length or a slice's length and
// capacity. It returns 0 for an unknown kind.
func (k PtrKind) Words() uint32 {
	switch k {
	case PtrObject, PtrUnsafe:
		return 1
	case PtrString:
		return 2
	case PtrSlice:
		return 3
	}
	return 0
}

// MarshalBinary returns the canonical encoding of d. It refuses a
// descriptor that UnmarshalBinary would refuse, including one whose Hash is
// not ComputeHash(), so that everything written to a pool can be read back.
func (d *TypeDesc) MarshalBinary() ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	b := d.appendBody(nil)
	if h := xxhash.Sum64(b); d.Hash != h {
		return nil, fmt.Errorf("type descriptor %q: hash %#016x does not match its contents (%#016x)", d.Name, d.Hash, h)
	}
	return binary.LittleEndian.AppendUint64(b, d.Hash), nil
}

// ComputeHash returns the xxhash64 of the canonical encoding of every field
// of d except Hash.
func (d *TypeDesc) ComputeHash() uint64 {
	return xxhash.Sum64(d.appendBody(nil))
}

// appendBody appends the encoding of d without the trailing hash.
func (d *TypeDesc) appendBody(b []byte) []byte {
	b = append(b, typeDescFormat)
	b = appendDescString(b, d.Name)
	b = binary.AppendUvarint(b, uint64(d.Size))
	b = binary.AppendUvarint(b, uint64(d.Align))
	b = binary.AppendUvarint(b, uint64(len(d.Fields)))
	for _, f := range d.Fields {
		b = appendDescString(b, f.Path)
		b = binary.AppendUvarint(b, uint64(f.Offset))
		b = binary.AppendUvarint(b, uint64(f.Size))
		b = appendDescString(b, f.Type)
	}
	b = binary.AppendUvarint(b, uint64(len(d.Ptrs)))
	for _, p := range d.Ptrs {
		b = binary.AppendUvarint(b, uint64(p.Offset))
		b = append(b, byte(p.Kind))
		b = appendDescString(b, p.Target)
		b = appendDescString(b, p.Field)
	}
	return b
}

func appendDescString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// UnmarshalBinary decodes a descriptor written by MarshalBinary into d and
// validates it. Since b comes from a pool file that may be corrupt, every
// length is checked against the bytes left before anything is allocated,
// and the error says what is wrong and where. On error d is left unchanged.
func (d *TypeDesc) UnmarshalBinary(b []byte) error {
	if len(b) < minTypeDescLen {
		return fmt.Errorf("type descriptor: truncated: %d bytes, need at least %d", len(b), minTypeDescLen)
	}
	body, stored := b[:len(b)-typeDescHashLen], binary.LittleEndian.Uint64(b[len(b)-typeDescHashLen:])
	if body[0] != typeDescFormat {
		return fmt.Errorf("type descriptor: format version %d, this build reads %d", body[0], typeDescFormat)
	}
	r := descReader{buf: body, pos: 1}
	var nd TypeDesc
	if err := r.header(&nd); err != nil {
		return fmt.Errorf("type descriptor: %w", err)
	}
	if err := r.fields(&nd); err != nil {
		return fmt.Errorf("type descriptor %q: %w", nd.Name, err)
	}
	if err := r.pointers(&nd); err != nil {
		return fmt.Errorf("type descriptor %q: %w", nd.Name, err)
	}
	if r.pos != len(body) {
		return fmt.Errorf("type descriptor %q: %d trailing bytes after the pointers", nd.Name, len(body)-r.pos)
	}
	if err := nd.validate(); err != nil {
		return err
	}
	// The body was read back from its canonical encoding, so hashing it is
	// the same as ComputeHash without encoding it again.
	if h := xxhash.Sum64(body); stored != h {
		return fmt.Errorf("type descriptor hash mismatch for %q: stored %#016x, computed %#016x", nd.Name, stored, h)
	}
	nd.Hash = stored
	*d = nd
	return nil
}

// validate checks what the encoding alone cannot: that d describes a
// layout a slab can hold and that every field and pointer lies inside it.
func (d *TypeDesc) validate() error {
	if d.Name == "" {
		return errors.New("type descriptor: empty type name")
	}
	if d.Size == 0 {
		return fmt.Errorf("type descriptor %q: size is zero", d.Name)
	}
	if d.Align == 0 || d.Align&(d.Align-1) != 0 || d.Align > MaxTypeAlign {
		return fmt.Errorf("type descriptor %q: alignment %d is not a power of two at most %d", d.Name, d.Align, MaxTypeAlign)
	}
	if d.Size%d.Align != 0 {
		return fmt.Errorf("type descriptor %q: size %d is not a multiple of alignment %d", d.Name, d.Size, d.Align)
	}
	for i, f := range d.Fields {
		if uint64(f.Offset)+uint64(f.Size) > uint64(d.Size) {
			return fmt.Errorf("type descriptor %q: field %d %q: offset %d + size %d exceeds type size %d", d.Name, i, f.Path, f.Offset, f.Size, d.Size)
		}
	}
	var end uint64
	for i, p := range d.Ptrs {
		if err := d.validatePointer(p, end); err != nil {
			return fmt.Errorf("type descriptor %q: pointer %d %q: %w", d.Name, i, p.Field, err)
		}
		end = uint64(p.Offset) + uint64(p.Kind.Words())*ptrWordSize
	}
	return nil
}

// validatePointer checks one pointer; end is where the previous pointer's
// words end. Swizzling rewrites these words in place, so an entry that is
// misaligned, overlaps another or pokes past the object would corrupt
// memory rather than fail.
func (d *TypeDesc) validatePointer(p Pointer, end uint64) error {
	words := p.Kind.Words()
	if words == 0 {
		return fmt.Errorf("kind %d out of range [%d, %d]", uint8(p.Kind), PtrObject, PtrSlice)
	}
	if p.Offset%ptrWordSize != 0 {
		return fmt.Errorf("offset %d is not %d-byte aligned", p.Offset, ptrWordSize)
	}
	if n := uint64(words) * ptrWordSize; uint64(p.Offset)+n > uint64(d.Size) {
		return fmt.Errorf("offset %d + %d exceeds type size %d", p.Offset, n, d.Size)
	}
	if uint64(p.Offset) < end {
		return fmt.Errorf("offset %d is not after the previous pointer's words, which end at %d", p.Offset, end)
	}
	if (p.Kind == PtrUnsafe) != (p.Target == "") {
		return fmt.Errorf("%s pointer has target %q", p.Kind, p.Target)
	}
	return nil
}

// descReader reads the body of an encoded descriptor.
type descReader struct {
	buf []byte
	pos int
}

func (r *descReader) header(d *TypeDesc) (err error) {
	if d.Name, err = r.string(); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if d.Size, err = r.uint32(); err != nil {
		return fmt.Errorf("size: %w", err)
	}
	if d.Align, err = r.uint32(); err != nil {
		return fmt.Errorf("alignment: %w", err)
	}
	return nil
}

func (r *descReader) fields(d *TypeDesc) error {
	n, err := r.count(minFieldLen)
	if err != nil {
		return fmt.Errorf("field count: %w", err)
	}
	if n > 0 {
		d.Fields = make([]Field, n)
	}
	for i := range d.Fields {
		f := &d.Fields[i]
		if f.Path, err = r.string(); err != nil {
			return fmt.Errorf("field %d path: %w", i, err)
		}
		if f.Offset, err = r.uint32(); err != nil {
			return fmt.Errorf("field %d %q offset: %w", i, f.Path, err)
		}
		if f.Size, err = r.uint32(); err != nil {
			return fmt.Errorf("field %d %q size: %w", i, f.Path, err)
		}
		if f.Type, err = r.string(); err != nil {
			return fmt.Errorf("field %d %q type: %w", i, f.Path, err)
		}
	}
	return nil
}

func (r *descReader) pointers(d *TypeDesc) error {
	n, err := r.count(minPointerLen)
	if err != nil {
		return fmt.Errorf("pointer count: %w", err)
	}
	if n > 0 {
		d.Ptrs = make([]Pointer, n)
	}
	for i := range d.Ptrs {
		p := &d.Ptrs[i]
		if p.Offset, err = r.uint32(); err != nil {
			return fmt.Errorf("pointer %d offset: %w", i, err)
		}
		if r.pos >= len(r.buf) {
			return fmt.Errorf("pointer %d kind: truncated at byte %d", i, r.pos)
		}
		p.Kind = PtrKind(r.buf[r.pos])
		r.pos++
		if p.Target, err = r.string(); err != nil {
			return fmt.Errorf("pointer %d target: %w", i, err)
		}
		if p.Field, err = r.string(); err != nil {
			return fmt.Errorf("pointer %d field: %w", i, err)
		}
	}
	return nil
}

func (r *descReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.buf[r.pos:])
	switch {
	case n == 0:
		return 0, fmt.Errorf("truncated at byte %d", r.pos)
	case n < 0:
		return 0, fmt.Errorf("varint at byte %d overflows 64 bits", r.pos)
	case n > 1 && r.buf[r.pos+n-1] == 0:
		// A padded varint would decode to the same value but re-encode
		// differently, and the hash covers the canonical bytes.
		return 0, fmt.Errorf("varint at byte %d is not minimally encoded", r.pos)
	}
	r.pos += n
	return v, nil
}

func (r *descReader) uint32() (uint32, error) {
	at := r.pos
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint32 {
		return 0, fmt.Errorf("value %d at byte %d overflows 32 bits", v, at)
	}
	return uint32(v), nil
}

// count reads an element count and checks that the bytes left could hold
// that many elements of at least minLen bytes each.
func (r *descReader) count(minLen int) (int, error) {
	at := r.pos
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if left := uint64(len(r.buf) - r.pos); v > left/uint64(minLen) {
		return 0, fmt.Errorf("truncated: %d elements at byte %d need at least %d bytes, %d left", v, at, satMul(v, uint64(minLen)), left)
	}
	return int(v), nil
}

func (r *descReader) string() (string, error) {
	at := r.pos
	n, err := r.uvarint()
	if err != nil {
		return "", err
	}
	if left := uint64(len(r.buf) - r.pos); n > left {
		return "", fmt.Errorf("truncated: string of %d bytes at byte %d, %d left", n, at, left)
	}
	s := string(r.buf[r.pos : r.pos+int(n)])
	r.pos += int(n)
	return s, nil
}

// satMul returns a*b, or math.MaxUint64 if that overflows; it is only used
// to report how much a corrupt count asks for.
func satMul(a, b uint64) uint64 {
	if b != 0 && a > math.MaxUint64/b {
		return math.MaxUint64
	}
	return a * b
}
