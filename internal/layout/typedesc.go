package layout

// PtrKind says what a pointer word inside an object refers to.
type PtrKind uint8

const (
	// PtrObject is a typed pointer (*T). It must point at the start of a T:
	// an object in a slab of T, or an element of an array slot of T.
	PtrObject PtrKind = iota + 1
	// PtrUnsafe is an unsafe.Pointer. It may point anywhere inside an
	// allocated slot.
	PtrUnsafe
	// PtrString is the data word of a string. It points into a byte slot;
	// the length is the word that follows it.
	PtrString
	// PtrSlice is the data word of a slice. It points into an array slot of
	// the element type; len and cap are the two words that follow it.
	PtrSlice
)

// Pointer is one pointer word of a type, in declaration order.
type Pointer struct {
	// Offset is the byte offset of the word in a value of the type.
	Offset uint32
	Kind   PtrKind
	// Target names the type pointed to (PtrObject) or the element type
	// (PtrSlice; "uint8" for PtrString). Empty for PtrUnsafe.
	Target string
	// Field is the field path, for messages: "Next", "Kids[2]", "In.Tags".
	Field string
}

// Field is one leaf of a type's flattened layout. Nested structs are
// flattened ("In.X"); arrays are kept whole ("Kids", type "[4]*main.Node").
type Field struct {
	Path   string
	Offset uint32
	Size   uint32
	// Type is the Go type as reflect prints it: "uint64", "*main.Node".
	Type string
}

// TypeDesc is a Go type's layout as stored in a pool's type table.
type TypeDesc struct {
	// Name is the stable identity of the type: import path and name for
	// named types ("example.com/app.Node", "main.Node"), reflect's string
	// for unnamed ones ("[4]uint32", "*main.Node", "uint8").
	Name  string
	Size  uint32
	Align uint32
	// Fields is the flattened layout; a non-struct type has one field with
	// an empty path.
	Fields []Field
	// Ptrs lists every pointer word, arrays expanded element by element.
	Ptrs []Pointer
	// Hash is the xxhash of the canonical encoding of everything above.
	Hash uint64
}
