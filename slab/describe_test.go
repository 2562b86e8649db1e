package slab_test

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/slab"
)

// pkg is the import path reflect reports for the types declared here.
const pkg = "github.com/pmemgo/pmemgo/slab_test"

type Node struct {
	Key  uint64
	Name string
	Next *Node
	Kids [4]*Node
	Tags []uint32
}

type Inner struct {
	X    uint32
	Tags []uint32
}

type Outer struct {
	ID   uint64
	In   Inner
	Next *Outer
}

type Base struct {
	Owner *Node
	Ver   uint32
}

type Derived struct {
	Base
	Label string
}

type EmbedsPointer struct {
	*Base
	N uint64
}

type Link struct {
	Next *Node
	Val  uint64
}

type Table struct {
	Count uint32
	Arr   [2]Link
}

type Grid struct {
	Cells [2][2]*Node
}

type Raw struct {
	P unsafe.Pointer
	U uintptr
}

type Blob struct {
	Len  uint64
	Data [1 << 20]byte
	Next *Blob
}

type PtrPtr struct {
	PP **Node
}

func ptr(off uint32, kind layout.PtrKind, target, field string) layout.Pointer {
	return layout.Pointer{Offset: off, Kind: kind, Target: target, Field: field}
}

func field(path string, off, size uint32, typ string) layout.Field {
	return layout.Field{Path: path, Offset: off, Size: size, Type: typ}
}

type describeCase struct {
	name   string
	typ    reflect.Type
	tname  string
	size   uint32
	fields []layout.Field
	ptrs   []layout.Pointer
}

func describeCases() []describeCase {
	node := pkg + ".Node"
	return []describeCase{
		{
			name:  "node",
			typ:   reflect.TypeFor[Node](),
			tname: node,
			size:  88,
			fields: []layout.Field{
				field("Key", 0, 8, "uint64"),
				field("Name", 8, 16, "string"),
				field("Next", 24, 8, "*slab_test.Node"),
				field("Kids", 32, 32, "[4]*slab_test.Node"),
				field("Tags", 64, 24, "[]uint32"),
			},
			ptrs: []layout.Pointer{
				ptr(8, layout.PtrString, "uint8", "Name"),
				ptr(24, layout.PtrObject, node, "Next"),
				ptr(32, layout.PtrObject, node, "Kids[0]"),
				ptr(40, layout.PtrObject, node, "Kids[1]"),
				ptr(48, layout.PtrObject, node, "Kids[2]"),
				ptr(56, layout.PtrObject, node, "Kids[3]"),
				ptr(64, layout.PtrSlice, "uint32", "Tags"),
			},
		},
		{
			name:  "nested struct",
			typ:   reflect.TypeFor[Outer](),
			tname: pkg + ".Outer",
			size:  48,
			fields: []layout.Field{
				field("ID", 0, 8, "uint64"),
				field("In.X", 8, 4, "uint32"),
				field("In.Tags", 16, 24, "[]uint32"),
				field("Next", 40, 8, "*slab_test.Outer"),
			},
			ptrs: []layout.Pointer{
				ptr(16, layout.PtrSlice, "uint32", "In.Tags"),
				ptr(40, layout.PtrObject, pkg+".Outer", "Next"),
			},
		},
		{
			name:  "embedded struct",
			typ:   reflect.TypeFor[Derived](),
			tname: pkg + ".Derived",
			size:  32,
			fields: []layout.Field{
				field("Base.Owner", 0, 8, "*slab_test.Node"),
				field("Base.Ver", 8, 4, "uint32"),
				field("Label", 16, 16, "string"),
			},
			ptrs: []layout.Pointer{
				ptr(0, layout.PtrObject, node, "Base.Owner"),
				ptr(16, layout.PtrString, "uint8", "Label"),
			},
		},
		{
			name:  "embedded pointer",
			typ:   reflect.TypeFor[EmbedsPointer](),
			tname: pkg + ".EmbedsPointer",
			size:  16,
			fields: []layout.Field{
				field("Base", 0, 8, "*slab_test.Base"),
				field("N", 8, 8, "uint64"),
			},
			ptrs: []layout.Pointer{ptr(0, layout.PtrObject, pkg+".Base", "Base")},
		},
		{
			name:  "array of structs with pointers",
			typ:   reflect.TypeFor[Table](),
			tname: pkg + ".Table",
			size:  40,
			fields: []layout.Field{
				field("Count", 0, 4, "uint32"),
				field("Arr", 8, 32, "[2]slab_test.Link"),
			},
			ptrs: []layout.Pointer{
				ptr(8, layout.PtrObject, node, "Arr[0].Next"),
				ptr(24, layout.PtrObject, node, "Arr[1].Next"),
			},
		},
		{
			name:   "array of arrays",
			typ:    reflect.TypeFor[Grid](),
			tname:  pkg + ".Grid",
			size:   32,
			fields: []layout.Field{field("Cells", 0, 32, "[2][2]*slab_test.Node")},
			ptrs: []layout.Pointer{
				ptr(0, layout.PtrObject, node, "Cells[0][0]"),
				ptr(8, layout.PtrObject, node, "Cells[0][1]"),
				ptr(16, layout.PtrObject, node, "Cells[1][0]"),
				ptr(24, layout.PtrObject, node, "Cells[1][1]"),
			},
		},
		{
			name:  "unsafe.Pointer and uintptr",
			typ:   reflect.TypeFor[Raw](),
			tname: pkg + ".Raw",
			size:  16,
			fields: []layout.Field{
				field("P", 0, 8, "unsafe.Pointer"),
				field("U", 8, 8, "uintptr"),
			},
			ptrs: []layout.Pointer{ptr(0, layout.PtrUnsafe, "", "P")},
		},
		{
			name:  "big byte array is not expanded",
			typ:   reflect.TypeFor[Blob](),
			tname: pkg + ".Blob",
			size:  8 + 1<<20 + 8,
			fields: []layout.Field{
				field("Len", 0, 8, "uint64"),
				field("Data", 8, 1<<20, "[1048576]uint8"),
				field("Next", 8+1<<20, 8, "*slab_test.Blob"),
			},
			ptrs: []layout.Pointer{ptr(8+1<<20, layout.PtrObject, pkg+".Blob", "Next")},
		},
		{
			name:   "pointer to pointer",
			typ:    reflect.TypeFor[PtrPtr](),
			tname:  pkg + ".PtrPtr",
			size:   8,
			fields: []layout.Field{field("PP", 0, 8, "**slab_test.Node")},
			ptrs:   []layout.Pointer{ptr(0, layout.PtrObject, "*slab_test.Node", "PP")},
		},
		{
			name:   "predeclared type",
			typ:    reflect.TypeFor[uint64](),
			tname:  "uint64",
			size:   8,
			fields: []layout.Field{field("", 0, 8, "uint64")},
		},
		{
			name:   "string",
			typ:    reflect.TypeFor[string](),
			tname:  "string",
			size:   16,
			fields: []layout.Field{field("", 0, 16, "string")},
			ptrs:   []layout.Pointer{ptr(0, layout.PtrString, "uint8", "")},
		},
		{
			name:   "unnamed array of pointers",
			typ:    reflect.TypeFor[[3]*Node](),
			tname:  "[3]*slab_test.Node",
			size:   24,
			fields: []layout.Field{field("", 0, 24, "[3]*slab_test.Node")},
			ptrs: []layout.Pointer{
				ptr(0, layout.PtrObject, node, "[0]"),
				ptr(8, layout.PtrObject, node, "[1]"),
				ptr(16, layout.PtrObject, node, "[2]"),
			},
		},
		{
			name:   "byte slice",
			typ:    reflect.TypeFor[[]byte](),
			tname:  "[]uint8",
			size:   24,
			fields: []layout.Field{field("", 0, 24, "[]uint8")},
			ptrs:   []layout.Pointer{ptr(0, layout.PtrSlice, "uint8", "")},
		},
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range describeCases() {
		t.Run(tc.name, func(t *testing.T) {
			d, err := slab.Describe(tc.typ)
			require.NoError(t, err)
			assert.Equal(t, tc.tname, d.Name)
			assert.Equal(t, tc.size, d.Size)
			assert.Equal(t, uint32(tc.typ.Align()), d.Align)
			assert.Equal(t, tc.fields, d.Fields)
			assert.Equal(t, tc.ptrs, d.Ptrs)
			assert.Equal(t, d.ComputeHash(), d.Hash)
		})
	}
}

type BadMap struct {
	ID uint64
	In struct{ M map[string]int }
}

type BadChan struct {
	Arr [2]struct{ C chan int }
}

type BadFunc struct {
	Base
	Hook func()
}

type BadInterface struct {
	In struct{ Deep struct{ V any } }
}

type BadSliceElem struct {
	Hooks []func()
}

type BadPointerElem struct {
	P *[2]map[int]int
}

type BadEmbedded struct {
	error
}

func TestDescribeRefuses(t *testing.T) {
	tests := []struct {
		name string
		typ  reflect.Type
		want []string
	}{
		{"map in nested struct", reflect.TypeFor[BadMap](), []string{pkg + `.BadMap field "In.M": map[string]int`, "maps are not supported"}},
		{"chan in array element", reflect.TypeFor[BadChan](), []string{`field "Arr[0].C": chan int`, "channels are not supported"}},
		{"func next to embedded struct", reflect.TypeFor[BadFunc](), []string{`field "Hook": func()`, "funcs are not supported"}},
		{"interface deep inside", reflect.TypeFor[BadInterface](), []string{`field "In.Deep.V": interface {}`, "interfaces are not supported"}},
		{"slice of funcs", reflect.TypeFor[BadSliceElem](), []string{`field "Hooks": []func()`, "funcs are not supported"}},
		{"pointer to array of maps", reflect.TypeFor[BadPointerElem](), []string{`field "P": *[2]map[int]int`, "maps are not supported"}},
		{"embedded interface", reflect.TypeFor[BadEmbedded](), []string{`field "error": error`, "interfaces are not supported"}},
		{"map itself", reflect.TypeFor[map[string]int](), []string{"type map[string]int:", "maps are not supported"}},
		{"zero size", reflect.TypeFor[struct{}](), []string{"type struct {}", "zero-size"}},
		{"zero-length array", reflect.TypeFor[[0]uint64](), []string{"type [0]uint64", "zero-size"}},
		{"nil", nil, []string{"nil type"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := slab.Describe(tc.typ)
			require.Error(t, err)
			assert.Nil(t, d)
			assert.ErrorIs(t, err, slab.ErrUnsupportedType)
			assert.ErrorIs(t, err, pmemgo.ErrUnsupportedType)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestTargets(t *testing.T) {
	tests := []struct {
		name string
		typ  reflect.Type
		want []reflect.Type
	}{
		{"recursive", reflect.TypeFor[Node](), []reflect.Type{reflect.TypeFor[uint8](), reflect.TypeFor[Node](), reflect.TypeFor[uint32]()}},
		{"nested", reflect.TypeFor[Outer](), []reflect.Type{reflect.TypeFor[uint32](), reflect.TypeFor[Outer]()}},
		{"array of structs", reflect.TypeFor[Table](), []reflect.Type{reflect.TypeFor[Node]()}},
		{"pointer to pointer", reflect.TypeFor[PtrPtr](), []reflect.Type{reflect.TypeFor[*Node]()}},
		{"unsafe.Pointer is skipped", reflect.TypeFor[Raw](), nil},
		{"no pointers", reflect.TypeFor[[16]uint64](), nil},
		{"empty array has no targets", reflect.TypeFor[struct {
			N    uint64
			None [0]*Node
		}](), nil},
		{"nil", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, slab.Targets(tc.typ))
		})
	}
}

// The rec* functions return versions of one type as successive builds of a
// program would declare it: function-local types with the same name get
// the same descriptor name, so only their layouts differ.

func recBase() reflect.Type {
	type Rec struct {
		A uint64
		B uint32
	}
	return reflect.TypeFor[Rec]()
}

func recFieldType() reflect.Type {
	type Rec struct {
		A uint64
		B int32
	}
	return reflect.TypeFor[Rec]()
}

func recReordered() reflect.Type {
	type Rec struct {
		B uint32
		A uint64
	}
	return reflect.TypeFor[Rec]()
}

func describe(t *testing.T, typ reflect.Type) *layout.TypeDesc {
	t.Helper()
	d, err := slab.Describe(typ)
	require.NoError(t, err)
	return d
}

func TestDescribeHash(t *testing.T) {
	base := describe(t, recBase())
	again := describe(t, recBase())
	assert.Equal(t, base, again, "Describe is deterministic")

	for name, typ := range map[string]reflect.Type{
		"field type changed":   recFieldType(),
		"field offset changed": recReordered(),
	} {
		t.Run(name, func(t *testing.T) {
			d := describe(t, typ)
			require.Equal(t, base.Name, d.Name, "versions must share a name for the test to mean anything")
			assert.NotEqual(t, base.Hash, d.Hash)
		})
	}
}

func TestDiff(t *testing.T) {
	outer := describe(t, reflect.TypeFor[Outer]())
	edit := func(f func(d *layout.TypeDesc)) *layout.TypeDesc {
		d := *outer
		d.Fields = slices.Clone(outer.Fields)
		d.Ptrs = slices.Clone(outer.Ptrs)
		f(&d)
		d.Hash = d.ComputeHash()
		return &d
	}

	tests := []struct {
		name string
		// Either two versions of a type or two descriptors.
		old, cur        reflect.Type
		stored, current *layout.TypeDesc
		want            string
	}{
		{
			name:   "equal",
			stored: outer, current: describe(t, reflect.TypeFor[Outer]()),
			want: "",
		},
		{
			name: "field type changed",
			old: func() reflect.Type {
				type Rec struct {
					Key   uint64
					Name  string
					Count uint64
				}
				return reflect.TypeFor[Rec]()
			}(),
			cur: func() reflect.Type {
				type Rec struct {
					Key   uint64
					Name  []uint8
					Count uint64
				}
				return reflect.TypeFor[Rec]()
			}(),
			want: `field "Name": stored string at offset 8, now []uint8 at offset 8`,
		},
		{
			name: "field added",
			old: func() reflect.Type {
				type Rec struct{ A, B, C, D, E uint64 }
				return reflect.TypeFor[Rec]()
			}(),
			cur: func() reflect.Type {
				type Rec struct{ A, B, C, D, E, Extra uint64 }
				return reflect.TypeFor[Rec]()
			}(),
			want: `field "Extra" (uint64 at offset 40) is new`,
		},
		{
			name: "field removed",
			old: func() reflect.Type {
				type Rec struct {
					A, B uint64
					Old  uint32
				}
				return reflect.TypeFor[Rec]()
			}(),
			cur: func() reflect.Type {
				type Rec struct{ A, B uint64 }
				return reflect.TypeFor[Rec]()
			}(),
			want: `field "Old" (uint32 at offset 16) was removed`,
		},
		{
			name: "field inserted before others",
			old: func() reflect.Type {
				type Rec struct{ A, B uint64 }
				return reflect.TypeFor[Rec]()
			}(),
			cur: func() reflect.Type {
				type Rec struct {
					A   uint64
					New uint32
					B   uint64
				}
				return reflect.TypeFor[Rec]()
			}(),
			want: `field "New" (uint32 at offset 8) is new`,
		},
		{
			name: "field removed before others",
			old: func() reflect.Type {
				type Rec struct {
					A   uint64
					Old uint32
					B   uint64
				}
				return reflect.TypeFor[Rec]()
			}(),
			cur: func() reflect.Type {
				type Rec struct{ A, B uint64 }
				return reflect.TypeFor[Rec]()
			}(),
			want: `field "Old" (uint32 at offset 8) was removed`,
		},
		{
			name: "fields reordered",
			old:  recBase(), cur: recReordered(),
			want: `field "A": stored uint64 at offset 0, now uint64 at offset 8`,
		},
		{
			name:   "size changed",
			stored: outer, current: edit(func(d *layout.TypeDesc) { d.Size = 56 }),
			want: "size: stored 48 bytes, now 56",
		},
		{
			name:   "pointer target changed",
			stored: outer, current: edit(func(d *layout.TypeDesc) { d.Ptrs[1].Target = "example.com/app.Other" }),
			want: `pointer "Next": stored *` + pkg + `.Outer at offset 40, now *example.com/app.Other at offset 40`,
		},
		{
			name:   "name changed",
			stored: outer, current: edit(func(d *layout.TypeDesc) { d.Name = "example.com/app.Outer" }),
			want: `name: stored "` + pkg + `.Outer", now "example.com/app.Outer"`,
		},
		{
			name:   "nothing stored",
			stored: nil, current: outer,
			want: "no stored layout to compare with",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.old != nil {
				tc.stored, tc.current = describe(t, tc.old), describe(t, tc.cur)
				require.Equal(t, tc.stored.Name, tc.current.Name, "versions of a type share its name")
			}
			assert.Equal(t, tc.want, slab.Diff(tc.stored, tc.current))
		})
	}
}

func TestTypeDescRoundTrip(t *testing.T) {
	for _, tc := range describeCases() {
		t.Run(tc.name, func(t *testing.T) {
			d := describe(t, tc.typ)
			b, err := d.MarshalBinary()
			require.NoError(t, err)
			var got layout.TypeDesc
			require.NoError(t, got.UnmarshalBinary(b))
			assert.Equal(t, *d, got)
			again, err := got.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, b, again)
		})
	}
}

func TestTypeDescMarshalRefusesStaleHash(t *testing.T) {
	d := describe(t, reflect.TypeFor[Node]())
	d.Hash++
	_, err := d.MarshalBinary()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not match its contents")
}

// encode writes d in the documented descriptor format with the given hash.
// It bypasses MarshalBinary's checks, so tests can build the bytes of
// descriptors a corrupt pool might hold.
func encode(d *layout.TypeDesc, hash uint64) []byte {
	str := func(b []byte, s string) []byte {
		return append(binary.AppendUvarint(b, uint64(len(s))), s...)
	}
	b := []byte{1}
	b = str(b, d.Name)
	b = binary.AppendUvarint(b, uint64(d.Size))
	b = binary.AppendUvarint(b, uint64(d.Align))
	b = binary.AppendUvarint(b, uint64(len(d.Fields)))
	for _, f := range d.Fields {
		b = str(b, f.Path)
		b = binary.AppendUvarint(b, uint64(f.Offset))
		b = binary.AppendUvarint(b, uint64(f.Size))
		b = str(b, f.Type)
	}
	b = binary.AppendUvarint(b, uint64(len(d.Ptrs)))
	for _, p := range d.Ptrs {
		b = binary.AppendUvarint(b, uint64(p.Offset))
		b = append(b, byte(p.Kind))
		b = str(b, p.Target)
		b = str(b, p.Field)
	}
	return binary.LittleEndian.AppendUint64(b, hash)
}

func TestTypeDescEncodingIsDocumentedFormat(t *testing.T) {
	d := describe(t, reflect.TypeFor[Node]())
	b, err := d.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, encode(d, d.Hash), b)
}

func TestTypeDescUnmarshalErrors(t *testing.T) {
	// Outer is 48 bytes: fields ID@0, In.X@8, In.Tags@16, Next@40;
	// pointers In.Tags@16 (slice), Next@40.
	outer := describe(t, reflect.TypeFor[Outer]())
	valid := encode(outer, outer.Hash)
	// corrupt encodes a modified copy of outer with a matching hash, so
	// that decoding fails on the modification and not on the checksum.
	corrupt := func(f func(d *layout.TypeDesc)) []byte {
		d := *outer
		d.Fields = slices.Clone(outer.Fields)
		d.Ptrs = slices.Clone(outer.Ptrs)
		f(&d)
		return encode(&d, d.ComputeHash())
	}
	withBody := func(body []byte) []byte {
		return binary.LittleEndian.AppendUint64(body, 0)
	}

	tests := []struct {
		name  string
		input []byte
		want  []string
	}{
		{"empty", nil, []string{"truncated", "0 bytes"}},
		{"truncated", valid[:len(valid)-5], []string{"truncated"}},
		{"truncated in a string", valid[:20], []string{"truncated"}},
		{"bad hash", append(slices.Clone(valid[:len(valid)-1]), valid[len(valid)-1]^1), []string{"type descriptor hash mismatch", "Outer"}},
		{"flipped bit in body", func() []byte {
			b := slices.Clone(valid)
			b[len(b)-20] ^= 0x10
			return b
		}(), []string{"type descriptor"}},
		{"bad version", append([]byte{2}, valid[1:]...), []string{"format version 2"}},
		{"bad kind", corrupt(func(d *layout.TypeDesc) { d.Ptrs[1].Kind = 9 }), []string{`pointer 1 "Next"`, "kind 9 out of range"}},
		{"zero kind", corrupt(func(d *layout.TypeDesc) { d.Ptrs[0].Kind = 0 }), []string{`pointer 0 "In.Tags"`, "kind 0 out of range"}},
		{"pointer beyond size", corrupt(func(d *layout.TypeDesc) { d.Ptrs[1].Offset = 48 }), []string{`pointer 1 "Next"`, "offset 48 + 8 exceeds type size 48"}},
		{"slice header beyond size", corrupt(func(d *layout.TypeDesc) { d.Ptrs[1].Kind = layout.PtrSlice }), []string{"offset 40 + 24 exceeds type size 48"}},
		{"unaligned pointer", corrupt(func(d *layout.TypeDesc) { d.Ptrs[0].Offset = 12 }), []string{"offset 12 is not 8-byte aligned"}},
		{"overlapping pointers", corrupt(func(d *layout.TypeDesc) { d.Ptrs[1].Offset = 32 }), []string{"offset 32", "end at 40"}},
		{"unsafe pointer with target", corrupt(func(d *layout.TypeDesc) { d.Ptrs[1].Kind = layout.PtrUnsafe }), []string{"unsafe pointer has target"}},
		{"field beyond size", corrupt(func(d *layout.TypeDesc) { d.Fields[3].Offset = 44 }), []string{`field 3 "Next"`, "offset 44 + size 8 exceeds type size 48"}},
		{"zero size", corrupt(func(d *layout.TypeDesc) { d.Size = 0 }), []string{"size is zero"}},
		{"alignment not a power of two", corrupt(func(d *layout.TypeDesc) { d.Align = 12 }), []string{"alignment 12"}},
		{"alignment too large", corrupt(func(d *layout.TypeDesc) { d.Align, d.Size = 8192, 8192 }), []string{"alignment 8192"}},
		{"empty name", corrupt(func(d *layout.TypeDesc) { d.Name = "" }), []string{"empty type name"}},
		{"trailing bytes", func() []byte {
			body := append(slices.Clone(valid[:len(valid)-8]), 0, 0)
			return binary.LittleEndian.AppendUint64(body, 0)
		}(), []string{"2 trailing bytes"}},
		{"huge field count", withBody(binary.AppendUvarint([]byte{1, 1, 'T', 8, 8}, 1<<40)), []string{"field count", "truncated", "1099511627776 elements"}},
		{"huge string", withBody(binary.AppendUvarint([]byte{1}, 1<<62)), []string{"name", "truncated", "string of"}},
		{"size overflows 32 bits", withBody(binary.AppendUvarint([]byte{1, 1, 'T'}, 1<<33)), []string{"size", "overflows 32 bits"}},
		{"padded varint", withBody([]byte{1, 1, 'T', 0x88, 0x00, 8, 0, 0}), []string{"size", "not minimally encoded"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := layout.TypeDesc{Name: "untouched"}
			err := d.UnmarshalBinary(tc.input)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Equal(t, layout.TypeDesc{Name: "untouched"}, d, "a failed decode leaves the descriptor alone")
		})
	}
}

func ExampleDescribe() {
	type List struct {
		Val  uint64
		Next *List
		Name string
	}
	d, err := slab.Describe(reflect.TypeFor[List]())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Name, d.Size)
	for _, p := range d.Ptrs {
		fmt.Printf("%s at offset %d: %s -> %s\n", p.Field, p.Offset, p.Kind, p.Target)
	}
	// Output:
	// github.com/pmemgo/pmemgo/slab_test.List 32
	// Next at offset 8: object -> github.com/pmemgo/pmemgo/slab_test.List
	// Name at offset 16: string -> uint8
}

func ExampleDiff() {
	type Account struct {
		ID      uint64
		Balance int64
	}
	type AccountV2 struct {
		ID      uint64
		Balance float64
	}
	stored, _ := slab.Describe(reflect.TypeFor[Account]())
	current, _ := slab.Describe(reflect.TypeFor[AccountV2]())
	current.Name = stored.Name // as if Account itself had changed
	current.Hash = current.ComputeHash()
	fmt.Println(slab.Diff(stored, current))
	// Output:
	// field "Balance": stored int64 at offset 8, now float64 at offset 8
}
