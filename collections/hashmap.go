package collections

import (
	"fmt"
	"iter"

	"github.com/pmemgo/pmemgo/heap"
)

// Hash table sizing: a table starts with minBuckets and doubles when the
// keys outnumber the buckets. While it grows, each Put or Delete moves
// movePerOp buckets of the old table first, which drains it long before
// the new table can need to grow again (that takes as many more keys as
// the old table has buckets).
const (
	minBuckets = 16
	movePerOp  = 2
)

type hashEntry[K comparable, V any] struct {
	key  K
	val  V
	next *hashEntry[K, V]
}

// HashMap is a hash map that lives in the pool: a table of chains of
// entries, one pool object each. It grows incrementally: while the old
// table drains into one twice its size, both are searched, and no single
// operation moves more than a few buckets; the table never shrinks.
// Allocate one with NewHashMap; every method takes the transaction it
// runs in.
type HashMap[K comparable, V any] struct {
	table []*hashEntry[K, V]
	// old is the table being drained; its buckets below moved are empty.
	old   []*hashEntry[K, V]
	moved uint64
	count uint64
}

// NewHashMap allocates an empty map in tx. A key type other than an
// integer, a string or a byte array is pmemgo.ErrUnsupportedType.
func NewHashMap[K comparable, V any](tx *heap.Tx) (*HashMap[K, V], error) {
	if _, err := keysOf[K](); err != nil {
		return nil, err
	}
	m, err := heap.New[HashMap[K, V]](tx)
	if err != nil {
		return nil, err
	}
	if m.table, err = heap.MakeSlice[*hashEntry[K, V]](tx, minBuckets, minBuckets); err != nil {
		return nil, err
	}
	return m, nil
}

// Len returns the number of keys.
func (m *HashMap[K, V]) Len(tx *heap.Tx) int { return int(m.count) }

// bucket returns the chain head that holds keys hashing to h.
func (m *HashMap[K, V]) bucket(h uint64) **hashEntry[K, V] {
	if m.old != nil {
		if i := h & uint64(len(m.old)-1); i >= m.moved {
			return &m.old[i]
		}
	}
	return &m.table[h&uint64(len(m.table)-1)]
}

// find returns the link that points at k's entry, or at the end of its
// chain.
func (m *HashMap[K, V]) find(ko *keyOps[K], k K) **hashEntry[K, V] {
	pp := m.bucket(ko.hash(k))
	for *pp != nil && (*pp).key != k {
		pp = &(*pp).next
	}
	return pp
}

// Get returns the value stored under k.
func (m *HashMap[K, V]) Get(tx *heap.Tx, k K) (V, bool) {
	if e := *m.find(mustKeys[K](), k); e != nil {
		return e.val, true
	}
	var zero V
	return zero, false
}

// Put stores v under k, replacing (and, for a string, freeing) the value
// it had.
func (m *HashMap[K, V]) Put(tx *heap.Tx, k K, v V) error {
	ko, err := keysOf[K]()
	if err != nil {
		return err
	}
	vo := valsOf[V]()
	if err := m.drain(tx, ko); err != nil {
		return err
	}
	pp := m.find(ko, k)
	if *pp != nil {
		return replaceValue(tx, vo, &(*pp).val, v)
	}
	e, err := heap.New[hashEntry[K, V]](tx)
	if err != nil {
		return err
	}
	if e.key, err = ko.persist(tx, k); err != nil {
		return err
	}
	if e.val, err = vo.persist(tx, v); err != nil {
		return err
	}
	grow := m.old == nil && m.count+1 > uint64(len(m.table))
	var table []*hashEntry[K, V]
	if grow {
		if table, err = heap.MakeSlice[*hashEntry[K, V]](tx, 2*len(m.table), 2*len(m.table)); err != nil {
			return err
		}
	}
	// The new entry goes to the head of its chain: the link to log is the
	// bucket, wherever find stopped.
	b := m.bucket(ko.hash(k))
	ranges := []heap.Range{rng(b), rng(&m.count)}
	if grow {
		ranges = append(ranges, rng(m))
	}
	if err := tx.AddRanges(ranges...); err != nil {
		return err
	}
	e.next, *b = *b, e
	m.count++
	if grow {
		m.old, m.table, m.moved = m.table, table, 0
	}
	return nil
}

// Delete removes k and reports whether it was there; its entry (and a
// string key or value) is freed.
func (m *HashMap[K, V]) Delete(tx *heap.Tx, k K) (bool, error) {
	ko, err := keysOf[K]()
	if err != nil {
		return false, err
	}
	if err := m.drain(tx, ko); err != nil {
		return false, err
	}
	pp := m.find(ko, k)
	e := *pp
	if e == nil {
		return false, nil
	}
	vo := valsOf[V]()
	// The commit checks the pointers of an entry that this transaction
	// allocated even when it frees it: clear them, or the next entry, key
	// and value, freed by the same transaction, would be reported as
	// dangling.
	ranges := []heap.Range{rng(pp), rng(&m.count), rng(&e.next)}
	clear := ko.str || vo.pointers
	if clear {
		ranges = append(ranges, rng(&e.key), rng(&e.val))
	}
	if err := tx.AddRanges(ranges...); err != nil {
		return false, err
	}
	*pp, e.next = e.next, nil
	m.count--
	if err := ko.free(tx, e.key); err != nil {
		return false, err
	}
	if err := vo.free(tx, e.val); err != nil {
		return false, err
	}
	if clear {
		var k K
		var v V
		e.key, e.val = k, v
	}
	return true, heap.Free(tx, e)
}

// drain moves up to movePerOp buckets of the old table into the new one,
// with one fence, and frees the old table once it is empty. Old bucket i
// splits into new buckets i and i+len(old), which nothing else fills.
func (m *HashMap[K, V]) drain(tx *heap.Tx, ko *keyOps[K]) error {
	if m.old == nil {
		return nil
	}
	n := uint64(len(m.old))
	last := min(m.moved+movePerOp, n)
	ranges := []heap.Range{rng(&m.old), rng(&m.moved)}
	var lists [movePerOp][2][]*hashEntry[K, V]
	for i := m.moved; i < last; i++ {
		ranges = append(ranges, rng(&m.old[i]), rng(&m.table[i]), rng(&m.table[i+n]))
		ls := &lists[i-m.moved]
		for e := m.old[i]; e != nil; e = e.next {
			side := (ko.hash(e.key) & n) / n
			ls[side] = append(ls[side], e)
		}
		for _, l := range ls {
			for j, e := range l {
				if e.next != nextIn(l, j) {
					ranges = append(ranges, rng(&e.next))
				}
			}
		}
	}
	if err := tx.AddRanges(ranges...); err != nil {
		return err
	}
	for i := m.moved; i < last; i++ {
		for side, l := range lists[i-m.moved] {
			for j, e := range l {
				e.next = nextIn(l, j)
			}
			if len(l) > 0 {
				m.table[i+uint64(side)*n] = l[0]
			}
		}
		m.old[i] = nil
	}
	m.moved = last
	if last < n {
		return nil
	}
	old := m.old
	m.old, m.moved = nil, 0
	return heap.FreeSlice(tx, old)
}

// nextIn returns the entry after l[j] in l, nil for the last.
func nextIn[T any](l []*T, j int) *T {
	if j+1 < len(l) {
		return l[j+1]
	}
	return nil
}

// All returns the entries in no particular order. The keys and values it
// yields live in the pool: copy what you keep past the transaction.
func (m *HashMap[K, V]) All(tx *heap.Tx) iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		var old []*hashEntry[K, V]
		if m.old != nil {
			old = m.old[m.moved:]
		}
		for _, t := range [][]*hashEntry[K, V]{old, m.table} {
			for _, e := range t {
				for ; e != nil; e = e.next {
					if !yield(e.key, e.val) {
						return
					}
				}
			}
		}
	}
}

// Check verifies that every entry is reachable once, in the bucket its
// hash chooses, with no key twice, that drained buckets are empty, and
// that the count matches. It returns the map's shape.
func (m *HashMap[K, V]) Check(tx *heap.Tx) (MapStats, error) {
	ko, err := keysOf[K]()
	if err != nil {
		return MapStats{}, err
	}
	st := MapStats{}
	seen := map[*hashEntry[K, V]]bool{}
	keys := map[K]bool{}
	fail := func(format string, args ...any) (MapStats, error) {
		return st, fmt.Errorf("collections: hash map check: "+format, args...)
	}
	n := len(m.table)
	if n < minBuckets || n&(n-1) != 0 {
		return fail("table of %d buckets", n)
	}
	if m.old != nil && (2*len(m.old) != n || m.moved >= uint64(len(m.old))) {
		return fail("old table of %d buckets, %d moved, beside %d", len(m.old), m.moved, n)
	}
	check := func(t []*hashEntry[K, V], from uint64) error {
		for i := range t {
			for e := t[i]; e != nil; e = e.next {
				switch {
				case uint64(i) < from:
					return fmt.Errorf("drained bucket %d is not empty", i)
				case seen[e]:
					return fmt.Errorf("entry %p reachable twice", e)
				case keys[e.key]:
					return fmt.Errorf("key %v stored twice", e.key)
				case m.bucket(ko.hash(e.key)) != &t[i]:
					return fmt.Errorf("key %v in bucket %d of %d, not where its hash leads", e.key, i, len(t))
				}
				seen[e], keys[e.key] = true, true
			}
		}
		return nil
	}
	if m.old != nil {
		if err := check(m.old, m.moved); err != nil {
			return fail("old table: %w", err)
		}
	}
	if err := check(m.table, 0); err != nil {
		return fail("%w", err)
	}
	st.Keys, st.Nodes = len(keys), len(seen)
	if uint64(st.Keys) != m.count {
		return fail("count %d, but %d keys reachable", m.count, st.Keys)
	}
	return st, nil
}
