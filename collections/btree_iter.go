package collections

import (
	"fmt"
	"iter"

	"github.com/pmemgo/pmemgo/heap"
)

// All returns the entries in ascending key order. The keys and values it
// yields live in the pool: copy what you keep past the transaction.
func (m *BTreeMap[K, V]) All(tx *heap.Tx) iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { m.walk(nil, false, yield) }
}

// Backward returns the entries in descending key order.
func (m *BTreeMap[K, V]) Backward(tx *heap.Tx) iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { m.walk(nil, true, yield) }
}

// Seek returns the entries with keys >= k in ascending order.
func (m *BTreeMap[K, V]) Seek(tx *heap.Tx, k K) iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { m.walk(&k, false, yield) }
}

// SeekBackward returns the entries with keys <= k in descending order.
func (m *BTreeMap[K, V]) SeekBackward(tx *heap.Tx, k K) iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { m.walk(&k, true, yield) }
}

// Min returns the smallest key and its value; ok is false for an empty map.
func (m *BTreeMap[K, V]) Min(tx *heap.Tx) (k K, v V, ok bool) {
	m.walk(nil, false, func(fk K, fv V) bool { k, v, ok = fk, fv, true; return false })
	return k, v, ok
}

// Max returns the largest key and its value; ok is false for an empty map.
func (m *BTreeMap[K, V]) Max(tx *heap.Tx) (k K, v V, ok bool) {
	m.walk(nil, true, func(fk K, fv V) bool { k, v, ok = fk, fv, true; return false })
	return k, v, ok
}

// walk yields the entries from *from (or from the end) in either order,
// until yield returns false.
func (m *BTreeMap[K, V]) walk(from *K, desc bool, yield func(K, V) bool) {
	c := mustKeys[K]().cmp
	if m.height == 0 {
		if m.leaf != nil {
			walkLeaf(c, m.leaf, from, desc, yield)
		}
		return
	}
	walkInner(c, m.root, m.height, from, desc, yield)
}

func walkInner[K comparable, V any](c func(a, b K) int, in *innerNode[K, V], h uint32, from *K, desc bool, yield func(K, V) bool) bool {
	n := int(in.n)
	i, step, end := 0, 1, n+1
	if desc {
		i, step, end = n, -1, -1
	}
	if from != nil {
		i = in.child(c, *from)
	}
	for ; i != end; i += step {
		var more bool
		if h == 1 {
			more = walkLeaf(c, in.leaves[i], from, desc, yield)
		} else {
			more = walkInner(c, in.kids[i], h-1, from, desc, yield)
		}
		if !more {
			return false
		}
		from = nil
	}
	return true
}

func walkLeaf[K comparable, V any](c func(a, b K) int, l *leafNode[K, V], from *K, desc bool, yield func(K, V) bool) bool {
	n := int(l.n)
	if !desc {
		j := 0
		if from != nil {
			j, _ = l.search(c, *from)
		}
		for ; j < n; j++ {
			if !yield(l.key(j), l.val(j)) {
				return false
			}
		}
		return true
	}
	j := n - 1
	if from != nil {
		var found bool
		if j, found = l.search(c, *from); !found {
			j--
		}
	}
	for ; j >= 0; j-- {
		if !yield(l.key(j), l.val(j)) {
			return false
		}
	}
	return true
}

// MapStats describes the shape of a map.
type MapStats struct {
	// Keys is the number of entries found by walking the map.
	Keys int
	// Nodes counts B+tree nodes (leaves and inner nodes) or hash entries;
	// Leaves counts B+tree leaves and Height its inner levels.
	Nodes, Leaves, Height int
}

// Check walks the whole tree and verifies its invariants: every node is
// reachable once, keys are strictly ascending within and across nodes and
// within their parent's bounds, every leaf is at the same depth, leaf
// slots are listed once each, entries past a node's count are zero, and
// the count matches the entries. It returns the tree's shape.
func (m *BTreeMap[K, V]) Check(tx *heap.Tx) (MapStats, error) {
	ko, err := keysOf[K]()
	if err != nil {
		return MapStats{}, err
	}
	ck := &checker[K, V]{c: ko.cmp, seen: map[any]bool{}}
	st := MapStats{Height: int(m.height)}
	switch {
	case m.height == 0 && m.root != nil:
		err = fmt.Errorf("height 0 with a root inner node")
	case m.height == 0 && m.leaf != nil:
		err = ck.leaf(m.leaf, nil, nil)
	case m.height > 0 && m.leaf != nil:
		err = fmt.Errorf("height %d with a root leaf", m.height)
	case m.height > 0:
		err = ck.inner(m.root, m.height, nil, nil)
	}
	st.Keys, st.Nodes, st.Leaves = ck.keys, len(ck.seen), ck.leaves
	if err == nil && uint64(ck.keys) != m.count {
		err = fmt.Errorf("count %d, but %d keys reachable", m.count, ck.keys)
	}
	if err != nil {
		return st, fmt.Errorf("collections: btree check: %w", err)
	}
	return st, nil
}
