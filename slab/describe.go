package slab

import (
	"fmt"
	"math"
	"reflect"
	"strconv"

	"github.com/pmemgo/pmemgo/internal/layout"
)

// Describe derives the layout of t that a pool records in its type table:
// the flattened fields, for messages and for Diff, and every pointer word,
// which recovery rewrites when the pool is mapped at a new address.
//
// Pointers are *T, unsafe.Pointer and the data words of strings and slices,
// found through structs and arrays. Arrays are expanded element by element,
// except arrays whose elements hold no pointers, which cost nothing however
// long they are. Describe refuses, with an error wrapping
// ErrUnsupportedType that names the field, any type holding a map, channel,
// func or interface (their memory is owned by the Go runtime), a pointer or
// slice whose element is one of those, and types of size zero.
func Describe(t reflect.Type) (*layout.TypeDesc, error) {
	if t == nil {
		return nil, fmt.Errorf("slab: nil type: %w", ErrUnsupportedType)
	}
	name := typeName(t)
	if t.Size() == 0 {
		return nil, fmt.Errorf("slab: type %s: %w (zero-size types have no storage of their own)", name, ErrUnsupportedType)
	}
	if t.Size() > math.MaxUint32 {
		return nil, fmt.Errorf("slab: type %s: %w (%d bytes is more than a descriptor records)", name, ErrUnsupportedType, t.Size())
	}
	w := describer{memo: make(map[reflect.Type][]layout.Pointer)}
	ptrs, bad := w.pointers(t)
	if bad != nil {
		return nil, bad.error(name)
	}
	d := &layout.TypeDesc{
		Name:   name,
		Size:   uint32(t.Size()),
		Align:  uint32(t.Align()),
		Fields: fieldsOf(t),
		Ptrs:   ptrs,
	}
	d.Hash = d.ComputeHash()
	return d, nil
}

// Targets returns the distinct types that the pointers of t refer to, in
// the order first met: T for *T, E for []E and uint8 for strings. Pointed-to
// values live in the pool too, so each of them must be registered as well;
// the result includes t itself when t is recursive. unsafe.Pointer has no
// target type and is skipped.
func Targets(t reflect.Type) []reflect.Type {
	if t == nil {
		return nil
	}
	var out []reflect.Type
	seen := make(map[reflect.Type]bool)
	add := func(t reflect.Type) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice:
			add(t.Elem())
		case reflect.String:
			add(byteType)
		case reflect.Array:
			// Every element has the same targets, and an empty array has
			// none, matching the pointers Describe lists.
			if t.Len() > 0 {
				walk(t.Elem())
			}
		case reflect.Struct:
			for i := range t.NumField() {
				walk(t.Field(i).Type)
			}
		}
	}
	walk(t)
	return out
}

var byteType = reflect.TypeFor[uint8]()

// typeName returns the stable identity of t recorded in descriptors.
func typeName(t reflect.Type) string {
	name := t.Name()
	if name == "" {
		return t.String()
	}
	if pkg := t.PkgPath(); pkg != "" {
		return pkg + "." + name
	}
	return name
}

// fieldsOf flattens t into its leaves. A non-struct type is one leaf.
func fieldsOf(t reflect.Type) []layout.Field {
	if t.Kind() != reflect.Struct {
		return []layout.Field{{Size: uint32(t.Size()), Type: t.String()}}
	}
	return appendFields(nil, t, "", 0)
}

func appendFields(fs []layout.Field, t reflect.Type, path string, off uintptr) []layout.Field {
	for i := range t.NumField() {
		f := t.Field(i)
		p := joinPath(path, f.Name)
		if f.Type.Kind() == reflect.Struct {
			fs = appendFields(fs, f.Type, p, off+f.Offset)
			continue
		}
		fs = append(fs, layout.Field{Path: p, Offset: uint32(off + f.Offset), Size: uint32(f.Type.Size()), Type: f.Type.String()})
	}
	return fs
}

// joinPath appends a field path to its parent's: "In" and "X" give "In.X",
// "Kids" and "[2]" give "Kids[2]".
func joinPath(parent, child string) string {
	switch {
	case parent == "":
		return child
	case child == "":
		return parent
	case child[0] == '[':
		return parent + child
	}
	return parent + "." + child
}

// describer finds the pointer words of types. Results are memoized per
// type because a struct type used in many fields or array elements would
// otherwise be walked once per use.
type describer struct {
	memo map[reflect.Type][]layout.Pointer
}

// unsupported locates a value the pool cannot hold: t, at path inside the
// described type, is or refers to something of kind.
type unsupported struct {
	path string
	t    reflect.Type
	kind reflect.Kind
}

func (u *unsupported) error(typeName string) error {
	if u.path == "" {
		return fmt.Errorf("slab: type %s: %w (%s are not supported)", typeName, ErrUnsupportedType, kindPlural(u.kind))
	}
	return fmt.Errorf("slab: type %s field %q: %s: %w (%s are not supported)", typeName, u.path, u.t, ErrUnsupportedType, kindPlural(u.kind))
}

func kindPlural(k reflect.Kind) string {
	switch k {
	case reflect.Map:
		return "maps"
	case reflect.Chan:
		return "channels"
	case reflect.Func:
		return "funcs"
	case reflect.Interface:
		return "interfaces"
	}
	return k.String() + " values"
}

func unsupportedKind(k reflect.Kind) bool {
	switch k {
	case reflect.Map, reflect.Chan, reflect.Func, reflect.Interface:
		return true
	}
	return false
}

// pointers returns the pointer words of a value of t, with offsets and
// field paths relative to the value.
func (w *describer) pointers(t reflect.Type) ([]layout.Pointer, *unsupported) {
	switch k := t.Kind(); {
	case unsupportedKind(k):
		return nil, &unsupported{t: t, kind: k}
	case k == reflect.Pointer:
		return w.reference(t, layout.PtrObject)
	case k == reflect.Slice:
		return w.reference(t, layout.PtrSlice)
	case k == reflect.UnsafePointer:
		return []layout.Pointer{{Kind: layout.PtrUnsafe}}, nil
	case k == reflect.String:
		return []layout.Pointer{{Kind: layout.PtrString, Target: typeName(byteType)}}, nil
	case k == reflect.Array || k == reflect.Struct:
		if ps, ok := w.memo[t]; ok {
			return ps, nil
		}
		var ps []layout.Pointer
		var bad *unsupported
		if k == reflect.Array {
			ps, bad = w.arrayPointers(t)
		} else {
			ps, bad = w.structPointers(t)
		}
		if bad != nil {
			return nil, bad
		}
		w.memo[t] = ps
		return ps, nil
	}
	return nil, nil
}

// reference describes a pointer or slice word. Its target is described
// when it is registered (see Targets), but a target that can never be
// registered is refused here, where the field that refers to it is known.
func (w *describer) reference(t reflect.Type, kind layout.PtrKind) ([]layout.Pointer, *unsupported) {
	elem := t.Elem()
	for elem.Kind() == reflect.Array {
		elem = elem.Elem()
	}
	if unsupportedKind(elem.Kind()) {
		return nil, &unsupported{t: t, kind: elem.Kind()}
	}
	return []layout.Pointer{{Kind: kind, Target: typeName(t.Elem())}}, nil
}

func (w *describer) structPointers(t reflect.Type) ([]layout.Pointer, *unsupported) {
	var out []layout.Pointer
	for i := range t.NumField() {
		f := t.Field(i)
		ps, bad := w.pointers(f.Type)
		if bad != nil {
			bad.path = joinPath(f.Name, bad.path)
			return nil, bad
		}
		for _, p := range ps {
			p.Offset += uint32(f.Offset)
			p.Field = joinPath(f.Name, p.Field)
			out = append(out, p)
		}
	}
	return out, nil
}

func (w *describer) arrayPointers(t reflect.Type) ([]layout.Pointer, *unsupported) {
	ps, bad := w.pointers(t.Elem())
	if bad != nil {
		// All elements share the type, so the first names the problem.
		bad.path = joinPath("[0]", bad.path)
		return nil, bad
	}
	if len(ps) == 0 || t.Len() == 0 {
		return nil, nil
	}
	out := make([]layout.Pointer, 0, t.Len()*len(ps))
	elemSize := t.Elem().Size()
	for i := range t.Len() {
		index := "[" + strconv.Itoa(i) + "]"
		for _, p := range ps {
			p.Offset += uint32(uintptr(i) * elemSize)
			p.Field = joinPath(index, p.Field)
			out = append(out, p)
		}
	}
	return out, nil
}

// Diff returns "" when stored and current have the same layout hash, and
// otherwise a one-line description of the first difference, for the error
// that refuses to open a pool with a changed type. Fields and pointers are
// matched by path. Among several differences the one nearest the start of
// the object is reported, and an added or removed field before a field
// that merely moved, since moves are usually a consequence of the other.
func Diff(stored, current *layout.TypeDesc) string {
	switch {
	case stored == nil && current == nil:
		return ""
	case stored == nil:
		return "no stored layout to compare with"
	case current == nil:
		return "no current layout to compare with"
	case stored.Hash == current.Hash:
		return ""
	case stored.Name != current.Name:
		return fmt.Sprintf("name: stored %q, now %q", stored.Name, current.Name)
	}
	if msg := firstDifference("field", stored.Fields, current.Fields, fieldDiffer); msg != "" {
		return msg
	}
	if stored.Size != current.Size {
		return fmt.Sprintf("size: stored %d bytes, now %d", stored.Size, current.Size)
	}
	if stored.Align != current.Align {
		return fmt.Sprintf("alignment: stored %d, now %d", stored.Align, current.Align)
	}
	if msg := firstDifference("pointer", stored.Ptrs, current.Ptrs, pointerDiffer); msg != "" {
		return msg
	}
	return fmt.Sprintf("layout hash: stored %#016x, now %#016x", stored.Hash, current.Hash)
}

// differ tells firstDifference how to compare and describe one kind of
// layout entry.
type differ[T any] struct {
	path     func(T) string
	offset   func(T) uint32
	equal    func(a, b T) bool
	describe func(T) string
	// detail describes an entry more fully, for when describe prints two
	// different entries alike.
	detail func(T) string
}

var fieldDiffer = differ[layout.Field]{
	path:   func(f layout.Field) string { return f.Path },
	offset: func(f layout.Field) uint32 { return f.Offset },
	equal:  func(a, b layout.Field) bool { return a == b },
	describe: func(f layout.Field) string {
		return fmt.Sprintf("%s at offset %d", f.Type, f.Offset)
	},
	detail: func(f layout.Field) string {
		return fmt.Sprintf("%s (%d bytes) at offset %d", f.Type, f.Size, f.Offset)
	},
}

var pointerDiffer = differ[layout.Pointer]{
	path:     func(p layout.Pointer) string { return p.Field },
	offset:   func(p layout.Pointer) uint32 { return p.Offset },
	equal:    func(a, b layout.Pointer) bool { return a == b },
	describe: describePointer,
	detail:   describePointer,
}

func describePointer(p layout.Pointer) string {
	var what string
	switch p.Kind {
	case layout.PtrObject:
		what = "*" + p.Target
	case layout.PtrUnsafe:
		what = "unsafe.Pointer"
	case layout.PtrString:
		what = "string"
	case layout.PtrSlice:
		what = "[]" + p.Target
	default:
		what = fmt.Sprintf("%s pointer to %q", p.Kind, p.Target)
	}
	return fmt.Sprintf("%s at offset %d", what, p.Offset)
}

// difference is one way two layouts differ. Differences are ranked by
// offset, then changed entries after added or removed ones.
type difference struct {
	at      uint32
	changed bool
	msg     string
}

func (d difference) before(o difference) bool {
	if d.at != o.at {
		return d.at < o.at
	}
	return !d.changed && o.changed
}

// pathKey identifies an entry by path and by how many entries with the
// same path precede it, since blank fields ("_") share a path.
type pathKey struct {
	path string
	n    int
}

func keyEntries[T any](entries []T, path func(T) string) []pathKey {
	seen := make(map[string]int)
	keys := make([]pathKey, len(entries))
	for i, e := range entries {
		p := path(e)
		keys[i] = pathKey{p, seen[p]}
		seen[p]++
	}
	return keys
}

// firstDifference compares two lists of entries matched by path and
// describes the first difference, or returns "" when there is none.
func firstDifference[T any](noun string, stored, current []T, d differ[T]) string {
	currentKeys := keyEntries(current, d.path)
	index := make(map[pathKey]int, len(current))
	for i, k := range currentKeys {
		index[k] = i
	}
	matched := make([]bool, len(current))
	var best *difference
	consider := func(diff difference) {
		if best == nil || diff.before(*best) {
			best = &diff
		}
	}
	for i, k := range keyEntries(stored, d.path) {
		s := stored[i]
		j, ok := index[k]
		if !ok {
			consider(difference{at: d.offset(s), msg: fmt.Sprintf("%s %q (%s) was removed", noun, k.path, d.describe(s))})
			continue
		}
		matched[j] = true
		c := current[j]
		if d.equal(s, c) {
			continue
		}
		was, now := d.describe(s), d.describe(c)
		if was == now {
			was, now = d.detail(s), d.detail(c)
		}
		consider(difference{
			at:      min(d.offset(s), d.offset(c)),
			changed: true,
			msg:     fmt.Sprintf("%s %q: stored %s, now %s", noun, k.path, was, now),
		})
	}
	for j, c := range current {
		if !matched[j] {
			consider(difference{at: d.offset(c), msg: fmt.Sprintf("%s %q (%s) is new", noun, currentKeys[j].path, d.describe(c))})
		}
	}
	if best == nil {
		return ""
	}
	return best.msg
}
