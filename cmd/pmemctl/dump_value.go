package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// dumper turns the bytes of a recovered pool into JSON values, by the Go
// type strings its type table records.
type dumper struct {
	img    *recovery.Image
	slabs  *recovery.SlabMap
	byName map[string]*layout.TypeDesc
	hex    bool
}

func newDumper(p *recovery.Pool, withHex bool) *dumper {
	d := &dumper{img: p.Image(), slabs: p.Slabs, byName: map[string]*layout.TypeDesc{}, hex: withHex}
	for i := range d.img.Types {
		td := &d.img.Types[i]
		d.byName[td.Name] = td
		// Field types are spelled as reflect prints them, with the package
		// name rather than its import path: "app.Color" for
		// "example.com/app.Color".
		if k := strings.LastIndexByte(td.Name, '/'); k >= 0 {
			d.byName[td.Name[k+1:]] = td
		}
	}
	return d
}

var le = binary.LittleEndian

// slot returns the JSON object dump prints for an allocated slot.
func (d *dumper) slot(s recovery.Slot) jsonObject {
	td := s.Type
	o := jsonObject{{"id", s.ID()}, {"offset", s.Off}, {"type", td.Name}}
	if s.Off == d.img.State.RootOff {
		o = append(o, jsonMember{"root", true})
	}
	b := d.img.Mem[s.Off : s.Off+uint64(s.Size)]
	if s.Kind == layout.KindObjects {
		b = b[:td.Size]
		o = append(o, jsonMember{"kind", "object"}, jsonMember{"size", s.Size}, jsonMember{"fields", d.value(td, b)})
	} else {
		b = b[:uint64(s.Elems)*uint64(td.Size)]
		o = append(o, jsonMember{"kind", "array"}, jsonMember{"size", s.Size}, jsonMember{"elems", s.Elems})
		o = append(o, d.elements(td, b))
	}
	if d.hex {
		o = append(o, jsonMember{"hex", hex.EncodeToString(b)})
	}
	return o
}

// elements returns the member listing an array slot's elements: "text"
// for the bytes of strings, up to the last non-zero byte, when they are
// UTF-8, else "elements".
func (d *dumper) elements(td *layout.TypeDesc, b []byte) jsonMember {
	if td.Name == "uint8" {
		if text := bytes.TrimRight(b, "\x00"); utf8.Valid(text) {
			return jsonMember{"text", string(text)}
		}
	}
	elems := make([]any, 0, len(b)/int(td.Size))
	for off := 0; off+int(td.Size) <= len(b); off += int(td.Size) {
		elems = append(elems, d.value(td, b[off:off+int(td.Size)]))
	}
	return jsonMember{"elements", elems}
}

// value decodes a value of a stored type: a struct as an object of its
// flattened fields, anything else by the Go type of its one field.
func (d *dumper) value(td *layout.TypeDesc, b []byte) any {
	if len(td.Fields) == 1 && td.Fields[0].Path == "" {
		return d.field(td.Fields[0].Type, b)
	}
	o := make(jsonObject, 0, len(td.Fields))
	for _, f := range td.Fields {
		o = append(o, jsonMember{f.Path, d.field(f.Type, b[f.Offset:f.Offset+f.Size])})
	}
	return o
}

// field decodes a value whose Go type, as reflect prints it, is typ.
func (d *dumper) field(typ string, b []byte) any {
	if v, ok := scalar(typ, b); ok {
		return v
	}
	switch {
	case typ == "string" && len(b) == 16:
		return d.str(le.Uint64(b), le.Uint64(b[8:]))
	case (typ == "unsafe.Pointer" || strings.HasPrefix(typ, "*")) && len(b) == 8:
		return d.pointer(le.Uint64(b))
	case strings.HasPrefix(typ, "[]") && len(b) == 24:
		return d.slice(le.Uint64(b), le.Uint64(b[8:]), le.Uint64(b[16:]))
	case strings.HasPrefix(typ, "["):
		if v, ok := d.array(typ, b); ok {
			return v
		}
	}
	if td := d.byName[typ]; td != nil && int(td.Size) == len(b) {
		return d.value(td, b)
	}
	return jsonObject{{"hex", hex.EncodeToString(b)}}
}

// scalar decodes booleans and numbers.
func scalar(typ string, b []byte) (any, bool) {
	switch {
	case typ == "bool" && len(b) == 1:
		return b[0] != 0, true
	case isInt(typ, "int") && len(b) <= 8:
		return signed(b), true
	case (isInt(typ, "uint") || typ == "uintptr") && len(b) <= 8:
		return unsigned(b), true
	case typ == "float32" && len(b) == 4:
		return float(float64(math.Float32frombits(le.Uint32(b))), 32), true
	case typ == "float64" && len(b) == 8:
		return float(math.Float64frombits(le.Uint64(b)), 64), true
	case typ == "complex64" && len(b) == 8:
		return []any{float(float64(math.Float32frombits(le.Uint32(b))), 32), float(float64(math.Float32frombits(le.Uint32(b[4:]))), 32)}, true
	case typ == "complex128" && len(b) == 16:
		return []any{float(math.Float64frombits(le.Uint64(b)), 64), float(math.Float64frombits(le.Uint64(b[8:])), 64)}, true
	}
	return nil, false
}

// isInt reports whether typ is prefix followed by nothing or a size:
// "int", "int32".
func isInt(typ, prefix string) bool {
	rest, ok := strings.CutPrefix(typ, prefix)
	return ok && (rest == "" || rest == "8" || rest == "16" || rest == "32" || rest == "64")
}

func unsigned(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func signed(b []byte) int64 {
	shift := 64 - 8*uint(len(b))
	return int64(unsigned(b)<<shift) >> shift
}

// float returns f as a JSON number, or as a string for the values JSON
// has no number for.
func float(f float64, bits int) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, bits)
	}
	if bits == 32 {
		// The shortest decimal that reads back as the float32, not as the
		// float64 it was widened to.
		v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', -1, 32), 64)
		return v
	}
	return f
}

// pointer returns the pool offset a pointer word points to, nil for nil,
// and a description of a pointer outside the pool.
func (d *dumper) pointer(v uint64) any {
	if v == 0 {
		return nil
	}
	if off := v - d.img.Base; off < uint64(len(d.img.Mem)) {
		return off
	}
	return fmt.Sprintf("%#x (outside the pool)", v)
}

// str returns a string's text when its bytes lie in an allocated slot,
// else its data pointer and length.
func (d *dumper) str(data, n uint64) any {
	if data == 0 && n == 0 {
		return ""
	}
	if off := data - d.img.Base; data != 0 && off < uint64(len(d.img.Mem)) && n <= uint64(len(d.img.Mem))-off {
		loc, err := d.slabs.Locate(d.img.Mem, off)
		end := d.img.Header.SlabOffset(loc.Index) + uint64(loc.Slab.DataOff) + uint64(loc.Slot+1)*uint64(loc.Slab.SlotSize)
		if text := d.img.Mem[off : off+n]; err == nil && loc.Allocated && off+n <= end && utf8.Valid(text) {
			return string(text)
		}
	}
	return jsonObject{{"data", d.pointer(data)}, {"len", n}}
}

// slice returns a slice header: its data offset, length and capacity.
func (d *dumper) slice(data, n, c uint64) any {
	if data == 0 && n == 0 && c == 0 {
		return nil
	}
	return jsonObject{{"data", d.pointer(data)}, {"len", n}, {"cap", c}}
}

// array decodes "[N]elem" into a JSON array of N values.
func (d *dumper) array(typ string, b []byte) (any, bool) {
	count, elem, ok := strings.Cut(typ[1:], "]")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n <= 0 || len(b)%n != 0 {
		return nil, false
	}
	size := len(b) / n
	out := make([]any, n)
	for i := range out {
		out[i] = d.field(elem, b[i*size:(i+1)*size])
	}
	return out, true
}
