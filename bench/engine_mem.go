package bench

import (
	"bytes"
	"errors"

	"github.com/google/btree"
)

var errUnordered = errors.New("bench: the engine is not ordered")

// goMap is Go's map: the ceiling for point operations, with no
// durability.
type goMap struct{ m map[Key]*Value }

func (e *goMap) Open(_ string, keys int) error { e.m = make(map[Key]*Value, keys); return nil }

func (e *goMap) Put(k *Key, v *Value) error {
	if p := e.m[*k]; p != nil {
		*p = *v
		return nil
	}
	nv := *v
	e.m[*k] = &nv
	return nil
}

func (e *goMap) Get(k *Key, v *Value) (bool, error) {
	p := e.m[*k]
	if p == nil {
		return false, nil
	}
	*v = *p
	return true, nil
}

func (e *goMap) Update(k *Key, f func(v *Value)) error {
	var v Value
	e.Get(k, &v)
	f(&v)
	return e.Put(k, &v)
}

func (e *goMap) Delete(k *Key) error              { delete(e.m, *k); return nil }
func (e *goMap) Scan(*Key, int) (int, error)      { return 0, errUnordered }
func (e *goMap) Close() error                     { e.m = nil; return nil }
func (e *googleBTree) Close() error               { e.t = nil; return nil }
func (e *googleBTree) Delete(k *Key) error        { e.t.Delete(item{k: *k}); return nil }
func (e *googleBTree) Open(_ string, _ int) error { e.t = btree.NewG(32, itemLess); return nil }

// googleBTree is github.com/google/btree in Go memory: the ceiling for
// ordered operations, with no durability.
type googleBTree struct{ t *btree.BTreeG[item] }

type item struct {
	k Key
	v *Value
}

func itemLess(a, b item) bool { return bytes.Compare(a.k[:], b.k[:]) < 0 }

func (e *googleBTree) Put(k *Key, v *Value) error {
	if it, ok := e.t.Get(item{k: *k}); ok {
		*it.v = *v
		return nil
	}
	nv := *v
	e.t.ReplaceOrInsert(item{k: *k, v: &nv})
	return nil
}

func (e *googleBTree) Get(k *Key, v *Value) (bool, error) {
	it, ok := e.t.Get(item{k: *k})
	if ok {
		*v = *it.v
	}
	return ok, nil
}

func (e *googleBTree) Update(k *Key, f func(v *Value)) error {
	var v Value
	e.Get(k, &v)
	f(&v)
	return e.Put(k, &v)
}

func (e *googleBTree) Scan(k *Key, n int) (int, error) {
	got := 0
	e.t.AscendGreaterOrEqual(item{k: *k}, func(item) bool {
		got++
		return got < n
	})
	return got, nil
}
