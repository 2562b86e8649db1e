package heap_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"pgregory.net/rapid"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// The property test in this file runs random allocations and frees of
// every size against a model of the slabs: small objects, objects and
// arrays spanning several slabs, and arrays of a good part of the pool, in
// transactions of which some abort, with the pool closed and reopened
// (from its slab summary, fully validated or relocated) now and then.
// The model knows where each live object lies (its offset, which the
// allocator chose) and the pool's geometry. The invariants:
//   - an allocation fails with ErrNoSpace exactly when no slab of its
//     class has a free slot and no run of free slabs is long enough for a
//     new slab (or extent) of the class; otherwise it succeeds, in a slab
//     of its class with room or in slabs that were free;
//   - every live object keeps its content, and the slabs in use are those
//     the live objects occupy.

// propTx is one transaction's work, with the model's view of it.
type propTx struct {
	m    *propModel
	tx   *heap.Tx
	root *propRoot
	// allocs are the objects the transaction allocated, freed ones
	// included: a slot freed by a transaction is reused only after it.
	allocs []*propObj
	// live is the model state inside the transaction.
	live [pKinds]map[int]*propObj
	// held are committed objects freed by the transaction: they occupy
	// their slots until it commits.
	held []*propObj
}

// alloc allocates an object of kind into handle i, n elements for an
// array, and checks the outcome against the model.
func (p *propTx) alloc(kind, i, n int) error {
	m := p.m
	c := m.class(kind, n)
	occupied := p.occupied()
	want := m.fits(c, occupied)
	// Zero is the content of a fresh slot: every object gets another.
	if m.fills++; m.fills == 0 {
		m.fills++
	}
	o := &propObj{cls: c, fill: m.fills, n: n}
	ptr, err := p.make(kind, i, o)
	switch {
	case errors.Is(err, pmemgo.ErrNoSpace) && !want:
		return nil
	case err != nil && want:
		return fmt.Errorf("allocating %d of kind %d (class %v): the model has room, the heap says %w", n, kind, c, err)
	case err != nil:
		return fmt.Errorf("allocating %d of kind %d: %w", n, kind, err)
	case !want:
		return fmt.Errorf("allocating %d of kind %d (class %v) succeeded where the model has no room", n, kind, c)
	}
	o.off = m.offset(ptr)
	o.slab = m.slabOf(o.off)
	used, count, cls := m.occupancy(occupied)
	extent, slots := m.slabGeometry(c)
	if n, ok := count[o.slab]; ok {
		if cls[o.slab] != c || uint32(n) >= slots {
			return fmt.Errorf("new object of class %v at offset %d in slab %d, which is full or of class %v", c, o.off, o.slab, cls[o.slab])
		}
	} else {
		for k := o.slab; k < o.slab+extent; k++ {
			if used[k] {
				return fmt.Errorf("new slab of class %v at %d covers slab %d, which is in use", c, o.slab, k)
			}
		}
	}
	p.allocs = append(p.allocs, o)
	p.live[kind][i] = o
	return nil
}

// occupied returns the objects that occupy slots during the transaction:
// the committed ones, freed or not, and those it allocated.
func (p *propTx) occupied() []*propObj {
	return append(append(p.m.committedExcept(p.live), p.allocs...), p.held...)
}

// committedExcept returns the committed objects the transaction has not
// replaced in its view: those it freed are in held.
func (m *propModel) committedExcept(live [pKinds]map[int]*propObj) []*propObj {
	var objs []*propObj
	for k := range m.live {
		for i, o := range m.live[k] {
			if live[k][i] == o {
				objs = append(objs, o)
			}
		}
	}
	return objs
}

// make allocates and fills the object, links it into the root and
// returns its address.
func (p *propTx) make(kind, i int, o *propObj) (unsafe.Pointer, error) {
	tx, r := p.tx, p.root
	switch kind {
	case pSmall:
		v, err := heap.New[propSmall](tx)
		if err != nil {
			return nil, err
		}
		v.A, v.B = uint64(o.fill), ^uint64(o.fill)
		return unsafe.Pointer(v), heap.Set(tx, &r.Small[i], v)
	case pBig:
		v, err := heap.New[propBig](tx)
		if err != nil {
			return nil, err
		}
		v.V = uint64(o.fill)
		fillBytes(v.Data[:], o.fill)
		return unsafe.Pointer(v), heap.Set(tx, &r.Big[i], v)
	case pBytes:
		v, err := heap.MakeSlice[byte](tx, o.n, o.n)
		if err != nil {
			return nil, err
		}
		fillBytes(v, o.fill)
		return unsafe.Pointer(unsafe.SliceData(v)), heap.Set(tx, &r.Bytes[i], v)
	}
	v, err := heap.MakeSlice[uint64](tx, o.n, o.n)
	if err != nil {
		return nil, err
	}
	fillBytes(wordBytes(v), o.fill)
	return unsafe.Pointer(unsafe.SliceData(v)), heap.Set(tx, &r.Words[i], v)
}

// fillBytes sets every byte of b to v, by doubling copies: the race
// detector checks a copy once, a loop byte by byte.
func fillBytes(b []byte, v byte) {
	if len(b) == 0 {
		return
	}
	b[0] = v
	for i := 1; i < len(b); i *= 2 {
		copy(b[i:], b[:i])
	}
}

// wordBytes returns the bytes of w.
func wordBytes(w []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*8)
}

// free frees the object at handle i of kind.
func (p *propTx) free(kind, i int) error {
	tx, r := p.tx, p.root
	var err error
	switch kind {
	case pSmall:
		err = errors.Join(heap.Free(tx, r.Small[i]), heap.Set(tx, &r.Small[i], nil))
	case pBig:
		err = errors.Join(heap.Free(tx, r.Big[i]), heap.Set(tx, &r.Big[i], nil))
	case pBytes:
		err = errors.Join(heap.FreeSlice(tx, r.Bytes[i]), heap.Set(tx, &r.Bytes[i], nil))
	default:
		err = errors.Join(heap.FreeSlice(tx, r.Words[i]), heap.Set(tx, &r.Words[i], nil))
	}
	if o := p.m.live[kind][i]; o != nil && o == p.live[kind][i] {
		p.held = append(p.held, o)
	}
	delete(p.live[kind], i)
	return err
}

// limits are the largest sizes of the array size ranges the test draws
// from, each range as likely as the others: a few bytes, a slab, several
// slabs, most of the pool.
var propLimits = []int{256, 16 << 10, 128 << 10, 800 << 10}

// step draws and runs one operation of a transaction: a free of a live
// object or an allocation into an empty handle.
func (p *propTx) step(t *rapid.T) error {
	var live, empty []propOp
	for kind := range pKinds {
		for i := range propHandles[kind] {
			if _, ok := p.live[kind][i]; ok {
				live = append(live, propOp{kind, i})
			} else {
				empty = append(empty, propOp{kind, i})
			}
		}
	}
	if len(live) > 0 && (len(empty) == 0 || rapid.IntRange(0, 2).Draw(t, "free") == 0) {
		op := rapid.SampledFrom(live).Draw(t, "free of")
		return p.free(op.kind, op.handle)
	}
	op := rapid.SampledFrom(empty).Draw(t, "alloc into")
	n := 1
	if op.kind == pBytes || op.kind == pWords {
		elem := 1
		if op.kind == pWords {
			elem = 8
		}
		if rapid.IntRange(0, 3).Draw(t, "at the limit") == 0 {
			// The largest array the longest free run holds, or one
			// element more: the edge the allocator must get right.
			n = p.largestFit(op.kind, elem) + rapid.IntRange(0, 1).Draw(t, "over")
		} else {
			n = rapid.IntRange(1, rapid.SampledFrom(propLimits).Draw(t, "size range")/elem).Draw(t, "elements")
		}
	}
	return p.alloc(op.kind, op.handle, n)
}

// largestFit returns the most elements of elem bytes that an array of
// kind can have and still fit the longest run of free slabs.
func (p *propTx) largestFit(kind, elem int) int {
	m := p.m
	used, _, _ := m.occupancy(p.occupied())
	longest := longestRun(used)
	lo, hi := 0, int(uint64(longest)*m.hdr.SlabSize)/elem
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if extent, _ := m.slabGeometry(m.class(kind, mid)); extent <= longest {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return max(lo, 1)
}

// propOp names a handle.
type propOp struct{ kind, handle int }

// txn runs a transaction of random operations, which aborts or commits.
func (m *propModel) txn(t *rapid.T) {
	steps := rapid.IntRange(1, 6).Draw(t, "steps")
	abort := rapid.IntRange(0, 3).Draw(t, "abort") == 0
	errAbort := errors.New("abort")
	var p *propTx
	err := m.h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[propRoot](tx)
		if err != nil {
			return err
		}
		p = &propTx{m: m, tx: tx, root: root}
		for k := range p.live {
			p.live[k] = map[int]*propObj{}
			for i, o := range m.live[k] {
				p.live[k][i] = o
			}
		}
		for range steps {
			if err := p.step(t); err != nil {
				return err
			}
		}
		if abort {
			return errAbort
		}
		return nil
	})
	if abort && errors.Is(err, errAbort) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	m.live = p.live
}

// reopen closes the pool and opens it again, from its summary, fully
// validated or relocated.
func (m *propModel) reopen(t *rapid.T) {
	opts := rapid.SampledFrom([]heap.Options{{}, {FullValidation: true}, {ForceRelocate: true}}).Draw(t, "open")
	if err := m.h.Close(); err != nil {
		t.Fatal(err)
	}
	m.h = nil
	h, err := heap.Open(m.path, &opts)
	if err != nil {
		t.Fatal(err)
	}
	m.h = h
}

// check compares the pool with the model: every live object in its
// place with its content, nothing else linked from the root, and as many
// slabs in use as the live objects occupy.
func (m *propModel) check(t *rapid.T) {
	err := m.h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[propRoot](tx)
		if err != nil {
			return err
		}
		at := func(kind, i int, p unsafe.Pointer, ok bool) (*propObj, error) {
			o := m.live[kind][i]
			switch {
			case o == nil && ok:
				return nil, fmt.Errorf("handle %d of kind %d is set, the model has no object", i, kind)
			case o == nil:
				return nil, nil
			case !ok || m.offset(p) != o.off:
				return nil, fmt.Errorf("handle %d of kind %d: object moved or lost", i, kind)
			}
			return o, nil
		}
		for i, v := range r.Small {
			o, err := at(pSmall, i, unsafe.Pointer(v), v != nil)
			if err == nil && o != nil && (v.A != uint64(o.fill) || v.B != ^uint64(o.fill)) {
				err = fmt.Errorf("small object %d changed", i)
			}
			if err != nil {
				return err
			}
		}
		for i, v := range r.Big {
			o, err := at(pBig, i, unsafe.Pointer(v), v != nil)
			if err == nil && o != nil && (v.V != uint64(o.fill) || bytes.Count(v.Data[:], []byte{o.fill}) != len(v.Data)) {
				err = fmt.Errorf("big object %d changed", i)
			}
			if err != nil {
				return err
			}
		}
		for i, v := range r.Bytes {
			o, err := at(pBytes, i, unsafe.Pointer(unsafe.SliceData(v)), v != nil)
			if err == nil && o != nil && (len(v) != o.n || bytes.Count(v, []byte{o.fill}) != o.n) {
				err = fmt.Errorf("byte array %d changed", i)
			}
			if err != nil {
				return err
			}
		}
		for i, v := range r.Words {
			o, err := at(pWords, i, unsafe.Pointer(unsafe.SliceData(v)), v != nil)
			if err == nil && o != nil && (len(v) != o.n || bytes.Count(wordBytes(v), []byte{o.fill}) != 8*o.n) {
				err = fmt.Errorf("word array %d changed", i)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	used, _, _ := m.occupancy(m.committed())
	n := 0
	for _, u := range used {
		if u {
			n++
		}
	}
	if got := m.h.Stats().SlabsUsed; got != n {
		t.Fatalf("%d slabs in use, the live objects occupy %d", got, n)
	}
}

// TestAllocatorModel is the property test described at the top of the
// file. Its default run takes a few seconds; -rapid.checks=N runs more.
func TestAllocatorModel(t *testing.T) {
	dir := fastTempDir(t)
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		m := &propModel{t: rt, path: filepath.Join(dir, fmt.Sprintf("prop-%d.pool", n))}
		h, err := heap.Open(m.path, &heap.Options{Size: 1 << 20, MaxSize: 1 << 20, SlabSize: 16 << 10})
		if err != nil {
			rt.Fatal(err)
		}
		m.h = h
		defer func() {
			if m.h != nil {
				m.h.Close()
			}
			checkPoolRapid(rt, m.path)
			os.Remove(m.path)
		}()
		m.hdr, _ = poolMeta(t, readFile(t, m.path))
		for k := range m.live {
			m.live[k] = map[int]*propObj{}
		}
		if err := h.Update(func(tx *heap.Tx) error {
			r, err := heap.Root[propRoot](tx)
			m.rootSlab = m.slabOf(m.offset(unsafe.Pointer(r)))
			return err
		}); err != nil {
			rt.Fatal(err)
		}
		rt.Repeat(map[string]func(*rapid.T){
			"":       m.check,
			"txn":    m.txn,
			"txn2":   m.txn,
			"txn3":   m.txn,
			"reopen": m.reopen,
		})
	})
}

// checkPoolRapid runs the offline checker on a closed pool.
func checkPoolRapid(t *rapid.T, path string) {
	err := recovery.CheckFile(path, func(p recovery.Problem) bool {
		t.Errorf("checker: %s", p)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}
