package collections

import (
	"github.com/pmemgo/pmemgo/heap"
)

// BTreeMap is an ordered map that lives in the pool: a B+tree whose nodes
// are pool objects linked by native pointers. Allocate one with
// NewBTreeMap and keep the returned pointer in a persistent object; every
// method takes the transaction it runs in (View for reads, Update for
// changes) and the map is valid only inside it.
type BTreeMap[K comparable, V any] struct {
	root *innerNode[K, V]
	// leaf is the only node while height is 0 (nil when the map has never
	// held a key); it is nil once the tree has inner nodes.
	leaf   *leafNode[K, V]
	height uint32
	count  uint64
}

// NewBTreeMap allocates an empty map in tx. A key type other than an
// integer, a string or a byte array, or a value type the pool cannot hold,
// is pmemgo.ErrUnsupportedType.
func NewBTreeMap[K comparable, V any](tx *heap.Tx) (*BTreeMap[K, V], error) {
	if _, err := keysOf[K](); err != nil {
		return nil, err
	}
	return heap.New[BTreeMap[K, V]](tx)
}

// Len returns the number of keys.
func (m *BTreeMap[K, V]) Len(tx *heap.Tx) int { return int(m.count) }

type step[K comparable, V any] struct {
	node *innerNode[K, V]
	i    int
}

// path records the inner nodes a descent went through, root first, with
// the index of the child taken.
type path[K comparable, V any] struct {
	steps [maxDepth]step[K, V]
	n     int
}

// descend returns the leaf whose range holds k, recording the way down in
// p when p is not nil.
func (m *BTreeMap[K, V]) descend(c func(a, b K) int, k K, p *path[K, V]) *leafNode[K, V] {
	if m.height == 0 {
		return m.leaf
	}
	in := m.root
	for h := m.height; ; h-- {
		i := in.child(c, k)
		if p != nil {
			p.steps[p.n] = step[K, V]{in, i}
			p.n++
		}
		if h == 1 {
			return in.leaves[i]
		}
		in = in.kids[i]
	}
}

// Get returns the value stored under k.
func (m *BTreeMap[K, V]) Get(tx *heap.Tx, k K) (V, bool) {
	c := mustKeys[K]().cmp
	var zero V
	l := m.descend(c, k, nil)
	if l == nil {
		return zero, false
	}
	j, ok := l.search(c, k)
	if !ok {
		return zero, false
	}
	return l.val(j), true
}

// Put stores v under k, replacing (and, for a string, freeing) the value
// it had.
func (m *BTreeMap[K, V]) Put(tx *heap.Tx, k K, v V) error {
	ko, err := keysOf[K]()
	if err != nil {
		return err
	}
	vo := valsOf[V]()
	if m.height == 0 && m.leaf == nil {
		return m.putFirst(tx, ko, vo, k, v)
	}
	var p path[K, V]
	l := m.descend(ko.cmp, k, &p)
	j, found := l.search(ko.cmp, k)
	if found {
		return replaceValue(tx, vo, &l.vals[l.order[j]], v)
	}
	key, err := ko.persist(tx, k)
	if err != nil {
		return err
	}
	val, err := vo.persist(tx, v)
	if err != nil {
		return err
	}
	if l.n < leafCap {
		s := l.freeSlot()
		if err := tx.AddRanges(l.hdr(), rng(&l.keys[s]), rng(&l.vals[s]), rng(&m.count)); err != nil {
			return err
		}
		l.put(j, s, key, val)
		m.count++
		return nil
	}
	if p.n > 0 {
		st := p.steps[p.n-1]
		if st.i > 0 && st.node.leaves[st.i-1].n <= leafCap-2 {
			return m.shiftLeft(tx, ko, vo, st.node, st.i, l, j, key, val)
		}
		if st.i < int(st.node.n) && st.node.leaves[st.i+1].n <= leafCap-2 {
			return m.shiftRight(tx, ko, vo, st.node, st.i, l, j, key, val)
		}
	}
	return m.splitPut(tx, ko, vo, &p, l, j, key, val)
}

func (m *BTreeMap[K, V]) putFirst(tx *heap.Tx, ko *keyOps[K], vo valOps[V], k K, v V) error {
	l, err := heap.New[leafNode[K, V]](tx)
	if err != nil {
		return err
	}
	key, err := ko.persist(tx, k)
	if err != nil {
		return err
	}
	val, err := vo.persist(tx, v)
	if err != nil {
		return err
	}
	if err := tx.AddRanges(rng(&m.leaf), rng(&m.count)); err != nil {
		return err
	}
	l.put(0, 0, key, val)
	m.leaf, m.count = l, 1
	return nil
}

// replaceValue logs and overwrites one value slot: an update of an
// existing key logs nothing else.
func replaceValue[V any](tx *heap.Tx, vo valOps[V], p *V, v V) error {
	nv, err := vo.persist(tx, v)
	if err != nil {
		return err
	}
	old := *p
	if err := heap.Set(tx, p, nv); err != nil {
		return err
	}
	return vo.free(tx, old)
}

// splitPut inserts into a full leaf: it splits the leaf and every full
// ancestor, logging everything they change with one fence first. The
// slots that move out of the old leaf are cleared when they hold
// pointers; otherwise they are simply no longer listed.
func (m *BTreeMap[K, V]) splitPut(tx *heap.Tx, ko *keyOps[K], vo valOps[V], p *path[K, V], l *leafNode[K, V], j int, key K, val V) error {
	// Appending past the last key (a sequential load) keeps the old leaf
	// full instead of leaving two half-empty leaves behind.
	mid := leafCap / 2
	if j == leafCap {
		mid = leafCap
	}
	clear := ko.str || vo.pointers
	ranges := []heap.Range{l.hdr(), rng(&m.count)}
	if clear {
		for _, s := range l.order[mid:] {
			ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
		}
	}
	if j < mid {
		// The new entry reuses a slot the move frees: the first moved one.
		s := l.order[mid]
		ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
	}
	lvl := p.n - 1
	for ; lvl >= 0 && p.steps[lvl].node.n == innerCap; lvl-- {
		ranges = append(ranges, rng(p.steps[lvl].node))
	}
	if lvl >= 0 {
		ranges = append(ranges, p.steps[lvl].node.shiftRanges(p.steps[lvl].i)...)
	} else {
		ranges = append(ranges, rng(m))
	}
	r, err := heap.New[leafNode[K, V]](tx)
	if err != nil {
		return err
	}
	if err := tx.AddRanges(ranges...); err != nil {
		return err
	}

	for q, s := range l.order[mid:] {
		r.keys[q], r.vals[q], r.order[q] = l.keys[s], l.vals[s], uint8(q)
		if clear {
			l.clearSlot(s)
		}
	}
	r.n = uint8(leafCap - mid)
	if j < mid {
		s := l.order[mid]
		l.n = uint8(mid)
		l.put(j, s, key, val)
	} else {
		l.n = uint8(mid)
		r.put(j-mid, r.freeSlot(), key, val)
	}
	m.count++
	sep, err := ko.persist(tx, r.key(0))
	if err != nil {
		return err
	}
	return m.insertUp(tx, p, sep, r)
}

// insertUp links the new leaf r, with separator sep, into the parents on
// path p, splitting the full ones; splitPut logged them all.
func (m *BTreeMap[K, V]) insertUp(tx *heap.Tx, p *path[K, V], sep K, r *leafNode[K, V]) error {
	var kid *innerNode[K, V]
	leaf := r
	for lvl := p.n - 1; lvl >= 0; lvl-- {
		in, i := p.steps[lvl].node, p.steps[lvl].i
		if in.n < innerCap {
			in.insert(i, sep, kid, leaf)
			return nil
		}
		right, err := heap.New[innerNode[K, V]](tx)
		if err != nil {
			return err
		}
		sep = in.splitInsert(i, sep, kid, leaf, right)
		kid, leaf = right, nil
	}
	root, err := heap.New[innerNode[K, V]](tx)
	if err != nil {
		return err
	}
	root.n, root.keys[0] = 1, sep
	if m.height == 0 {
		root.leaves[0], root.leaves[1] = m.leaf, leaf
		m.leaf = nil
	} else {
		root.kids[0], root.kids[1] = m.root, kid
	}
	m.root = root
	m.height++
	return nil
}
