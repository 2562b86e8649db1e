// Package collections holds persistent maps that live in a pmemgo pool:
// BTreeMap, an ordered B+tree, and HashMap, a chained hash table that
// grows incrementally. Both are built on the public heap API only, are
// linked by native pointers, and are used inside heap.Update and
// heap.View: a map is a header object allocated with NewBTreeMap or
// NewHashMap, which the application stores in its root (or in any other
// persistent object) and passes a transaction to on every call.
//
// Keys are integers, strings or fixed-size byte arrays (and types defined
// on them). A string key, and a string value, is copied into the pool by
// Put and freed when it is deleted or replaced. Any other value is stored
// as it is: pointers it holds must point into the pool, or the commit
// fails with pmemgo.ErrForeignPointer.
//
// Every change is logged with the fewest ranges the operation changes,
// with one fence for all of them in the common case: a Put into a B+tree
// leaf with room logs the leaf's order array, the slot it fills and the
// count, never the whole leaf.
package collections

import (
	"bytes"
	"cmp"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// keyOps compares, hashes and persists keys of one Go type. It is derived
// once per type with reflect and cached, since a generic function cannot
// order an arbitrary comparable type.
type keyOps[K comparable] struct {
	cmp  func(a, b K) int
	hash func(k K) uint64
	str  bool // K is a string kind: keys are copied into the pool
	size int
	err  error
}

var keyOpsCache sync.Map // reflect.Type -> *keyOps[K]

// keysOf returns the operations for K, or an error naming K when it cannot
// be a key.
func keysOf[K comparable]() (*keyOps[K], error) {
	t := reflect.TypeFor[K]()
	if v, ok := keyOpsCache.Load(t); ok {
		ko := v.(*keyOps[K])
		return ko, ko.err
	}
	ko := newKeyOps[K](t)
	keyOpsCache.Store(t, ko)
	return ko, ko.err
}

// mustKeys is keysOf for read paths that cannot return an error: a map
// whose key type is refused cannot be created with NewBTreeMap or
// NewHashMap, so reaching the panic means the header was made by hand.
func mustKeys[K comparable]() *keyOps[K] {
	ko, err := keysOf[K]()
	if err != nil {
		panic(err)
	}
	return ko
}

func newKeyOps[K comparable](t reflect.Type) *keyOps[K] {
	ko := &keyOps[K]{size: int(t.Size())}
	switch t.Kind() {
	case reflect.Int8:
		ko.cmp, ko.hash = cmpAs[int8, K], hashInt[int8, K]
	case reflect.Int16:
		ko.cmp, ko.hash = cmpAs[int16, K], hashInt[int16, K]
	case reflect.Int32:
		ko.cmp, ko.hash = cmpAs[int32, K], hashInt[int32, K]
	case reflect.Int, reflect.Int64:
		ko.cmp, ko.hash = cmpAs[int64, K], hashInt[int64, K]
	case reflect.Uint8:
		ko.cmp, ko.hash = cmpAs[uint8, K], hashInt[uint8, K]
	case reflect.Uint16:
		ko.cmp, ko.hash = cmpAs[uint16, K], hashInt[uint16, K]
	case reflect.Uint32:
		ko.cmp, ko.hash = cmpAs[uint32, K], hashInt[uint32, K]
	case reflect.Uint, reflect.Uint64, reflect.Uintptr:
		ko.cmp, ko.hash = cmpAs[uint64, K], hashInt[uint64, K]
	case reflect.String:
		ko.str = true
		ko.cmp = cmpAs[string, K]
		ko.hash = func(k K) uint64 { return xxhash.Sum64String(*(*string)(unsafe.Pointer(&k))) }
	case reflect.Array:
		if t.Elem().Kind() != reflect.Uint8 {
			ko.err = fmt.Errorf("collections: key type %s: arrays of %s: %w (only byte arrays can be keys)", t, t.Elem(), pmemgo.ErrUnsupportedType)
			break
		}
		n := t.Len()
		ko.cmp = func(a, b K) int {
			return bytes.Compare(unsafe.Slice((*byte)(unsafe.Pointer(&a)), n), unsafe.Slice((*byte)(unsafe.Pointer(&b)), n))
		}
		ko.hash = func(k K) uint64 { return xxhash.Sum64(unsafe.Slice((*byte)(unsafe.Pointer(&k)), n)) }
	default:
		ko.err = fmt.Errorf("collections: key type %s: %w (keys are integers, strings or byte arrays)", t, pmemgo.ErrUnsupportedType)
	}
	return ko
}

func cmpAs[T cmp.Ordered, K any](a, b K) int {
	return cmp.Compare(*(*T)(unsafe.Pointer(&a)), *(*T)(unsafe.Pointer(&b)))
}

// hashInt mixes an integer key with the finalizer of SplitMix64: the
// table index takes the low bits, which must depend on all of the key.
func hashInt[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64, K any](k K) uint64 {
	x := uint64(*(*T)(unsafe.Pointer(&k)))
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// persist copies a string key into the pool; other keys are values.
func (ko *keyOps[K]) persist(tx *heap.Tx, k K) (K, error) {
	if !ko.str {
		return k, nil
	}
	s, err := heap.NewString(tx, *(*string)(unsafe.Pointer(&k)))
	if err != nil {
		return k, fmt.Errorf("collections: copy key: %w", err)
	}
	return *(*K)(unsafe.Pointer(&s)), nil
}

// free frees a string key that persist copied.
func (ko *keyOps[K]) free(tx *heap.Tx, k K) error {
	if !ko.str {
		return nil
	}
	return heap.FreeString(tx, *(*string)(unsafe.Pointer(&k)))
}

// valOps persists values: a string value is copied into the pool like a
// key; values holding pointers make dropped slots need clearing, so that
// no stale pointer outlives what it points to.
type valOps[V any] struct {
	str      bool
	pointers bool
}

var valOpsCache sync.Map // reflect.Type -> valOps[V]

func valsOf[V any]() valOps[V] {
	t := reflect.TypeFor[V]()
	if v, ok := valOpsCache.Load(t); ok {
		return v.(valOps[V])
	}
	vo := valOps[V]{str: t.Kind() == reflect.String, pointers: hasPointers(t)}
	valOpsCache.Store(t, vo)
	return vo
}

func (vo valOps[V]) persist(tx *heap.Tx, v V) (V, error) {
	if !vo.str {
		return v, nil
	}
	s, err := heap.NewString(tx, *(*string)(unsafe.Pointer(&v)))
	if err != nil {
		return v, fmt.Errorf("collections: copy value: %w", err)
	}
	return *(*V)(unsafe.Pointer(&s)), nil
}

func (vo valOps[V]) free(tx *heap.Tx, v V) error {
	if !vo.str {
		return nil
	}
	return heap.FreeString(tx, *(*string)(unsafe.Pointer(&v)))
}

// hasPointers reports whether t holds a word the pool would swizzle.
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.String, reflect.Slice,
		reflect.Map, reflect.Chan, reflect.Func, reflect.Interface:
		return true
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// rng returns the Range of *p for heap.Tx.AddRanges.
func rng[T any](p *T) heap.Range { return heap.Range{Ptr: unsafe.Pointer(p), Len: unsafe.Sizeof(*p)} }
