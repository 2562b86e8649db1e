package heap

import (
	"fmt"
	"math/bits"
	"reflect"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// Register records the layout of T (and of every type T points to) in the
// pool, or checks it against the stored layout. Types are also registered
// on first use; registering up front reports ErrTypeMismatch or
// ErrUnsupportedType at a predictable point.
func Register[T any](h *Heap) error {
	return h.Update(func(tx *Tx) error {
		_, err := tx.typeOf(reflect.TypeFor[T]())
		return err
	})
}

// New allocates a zeroed T in the pool. It needs no logging in the
// transaction that allocated it.
func New[T any](tx *Tx) (*T, error) {
	if err := tx.usable(true); err != nil {
		return nil, err
	}
	ti, err := tx.typeOf(reflect.TypeFor[T]())
	if err != nil {
		return nil, err
	}
	off, err := tx.allocSlot(classKey{typ: ti.id, slot: objectSlot(ti.desc.Size), kind: layout.KindObjects}, 1)
	if err != nil {
		return nil, fmt.Errorf("new %s: %w", ti.desc.Name, err)
	}
	return (*T)(tx.h.at(off)), nil
}

// Root returns the pool's root object, allocating it in an Update when the
// pool has none yet. In a View on a pool without a root it returns nil. A
// root of another type is ErrTypeMismatch.
func Root[T any](tx *Tx) (*T, error) {
	if err := tx.usable(false); err != nil {
		return nil, err
	}
	if tx.state.RootOff == 0 && !tx.writable {
		return nil, nil
	}
	ti, err := tx.typeOf(reflect.TypeFor[T]())
	if err != nil {
		return nil, err
	}
	if tx.state.RootOff == 0 {
		p, err := New[T](tx)
		if err != nil {
			return nil, err
		}
		if err := tx.touchState(); err != nil {
			return nil, err
		}
		off, _ := tx.h.offset(unsafe.Pointer(p))
		tx.state.RootOff, tx.state.RootType = off, ti.id
		return p, nil
	}
	if tx.state.RootType != ti.id {
		stored := "an unknown type"
		if st := tx.h.types.byID(tx.state.RootType); st != nil {
			stored = st.desc.Name
		}
		return nil, fmt.Errorf("root is a %s, not a %s: %w", stored, ti.desc.Name, pmemgo.ErrTypeMismatch)
	}
	return (*T)(tx.h.at(tx.state.RootOff)), nil
}

// MakeSlice allocates a zeroed slice of length n and capacity c whose
// backing array lives in the pool. A zero capacity gives a nil slice.
func MakeSlice[T any](tx *Tx, n, c int) ([]T, error) {
	if err := tx.usable(true); err != nil {
		return nil, err
	}
	if n < 0 || c < n {
		return nil, fmt.Errorf("make slice: length %d, capacity %d", n, c)
	}
	if c == 0 {
		return nil, nil
	}
	ti, err := tx.typeOf(reflect.TypeFor[T]())
	if err != nil {
		return nil, err
	}
	size := uint64(ti.desc.Size)
	if uint64(c) > (1<<40)/size {
		return nil, fmt.Errorf("make slice of %d %s: %w", c, ti.desc.Name, pmemgo.ErrNoSpace)
	}
	slot := arraySlot(uint64(c) * size)
	off, err := tx.allocSlot(classKey{typ: ti.id, slot: slot, kind: layout.KindArray}, slot/uint32(size))
	if err != nil {
		return nil, fmt.Errorf("make slice of %d %s: %w", c, ti.desc.Name, err)
	}
	return unsafe.Slice((*T)(tx.h.at(off)), c)[:n], nil
}

// NewString copies s into the pool and returns the pool-resident string.
func NewString(tx *Tx, s string) (string, error) {
	b, err := MakeSlice[byte](tx, len(s), len(s))
	if err != nil || len(b) == 0 {
		return "", err
	}
	copy(b, s)
	return unsafe.String(&b[0], len(b)), nil
}

// Append appends vs to s like the built-in append, growing into a new pool
// array when s has no room. The old array is not freed: other objects may
// still refer to it. Log s's array with AddSlice before appending in place
// to a slice that existed before the transaction.
func Append[T any](tx *Tx, s []T, vs ...T) ([]T, error) {
	if len(s)+len(vs) <= cap(s) {
		return append(s, vs...), nil
	}
	grown, err := MakeSlice[T](tx, len(s)+len(vs), max(2*cap(s), len(s)+len(vs)))
	if err != nil {
		return s, err
	}
	copy(grown, s)
	copy(grown[len(s):], vs)
	return grown, nil
}

// Free frees the object p points to at commit. p must have been returned
// by New for the same type.
func Free[T any](tx *Tx, p *T) error {
	return tx.freeAt(unsafe.Pointer(p), reflect.TypeFor[T](), layout.KindObjects)
}

// FreeSlice frees the backing array of s at commit. s must start where
// MakeSlice's result started.
func FreeSlice[T any](tx *Tx, s []T) error {
	if cap(s) == 0 {
		return nil
	}
	return tx.freeAt(unsafe.Pointer(unsafe.SliceData(s)), reflect.TypeFor[T](), layout.KindArray)
}

// FreeString frees the bytes of a string made by NewString at commit.
func FreeString(tx *Tx, s string) error {
	if len(s) == 0 {
		return nil
	}
	return tx.freeAt(unsafe.Pointer(unsafe.StringData(s)), reflect.TypeFor[byte](), layout.KindArray)
}

func (tx *Tx) freeAt(p unsafe.Pointer, rt reflect.Type, kind uint8) error {
	if err := tx.usable(true); err != nil {
		return err
	}
	off, ok := tx.h.offset(p)
	if !ok {
		return fmt.Errorf("free %p: %w", p, pmemgo.ErrNotInPool)
	}
	ti, err := tx.typeOf(rt)
	if err != nil {
		return err
	}
	s, slot, within, ok := tx.h.alloc.lookup(off)
	switch {
	case !ok:
		return fmt.Errorf("free at offset %d: not in an allocated slab: %w", off, pmemgo.ErrInvalidFree)
	case within != 0:
		return fmt.Errorf("free at offset %d: %d bytes into slab %d slot %d: %w", off, within, s.idx, slot, pmemgo.ErrInvalidFree)
	case s.sh.Kind != kind || s.sh.Type != ti.id:
		return fmt.Errorf("free of a %s at offset %d: slab %d holds type %d: %w", ti.desc.Name, off, s.idx, s.sh.Type, pmemgo.ErrInvalidFree)
	case off == tx.state.RootOff:
		return fmt.Errorf("free of the root object at offset %d: %w", off, pmemgo.ErrInvalidFree)
	}
	return tx.freeSlot(s, slot)
}

// Add logs *p so that a rollback restores it; call it before changing *p
// if *p existed before the transaction.
func Add[T any](tx *Tx, p *T) error {
	return tx.AddRange(unsafe.Pointer(p), unsafe.Sizeof(*p))
}

// AddAll logs every *p, as Add does, with one fence for all of them (see
// Tx.AddRanges): call it before changing many existing objects of one
// type in a transaction.
func AddAll[T any](tx *Tx, ps ...*T) error {
	rs := make([]Range, len(ps))
	for i, p := range ps {
		rs[i] = Range{unsafe.Pointer(p), unsafe.Sizeof(*p)}
	}
	return tx.AddRanges(rs...)
}

// Set logs *p and stores v in it.
func Set[T any](tx *Tx, p *T, v T) error {
	if err := Add(tx, p); err != nil {
		return err
	}
	*p = v
	return nil
}

// AddSlice logs the elements of s.
func AddSlice[T any](tx *Tx, s []T) error {
	if len(s) == 0 {
		return nil
	}
	var zero T
	return tx.AddRange(unsafe.Pointer(unsafe.SliceData(s)), uintptr(len(s))*unsafe.Sizeof(zero))
}

// objectSlot is the slot size for objects of size bytes: 8-byte aligned,
// so every word of an object is aligned for the swizzler.
func objectSlot(size uint32) uint32 { return (size + 7) &^ 7 }

// arraySlot rounds an array of n bytes up to its size class: multiples of
// 16 up to 256 bytes, then four classes per power of two, which bounds the
// waste at a quarter.
func arraySlot(n uint64) uint32 {
	if n <= 256 {
		return uint32((n + 15) &^ 15)
	}
	p := uint64(1) << (63 - bits.LeadingZeros64(n))
	step := p / 4
	return uint32((n + step - 1) / step * step)
}
