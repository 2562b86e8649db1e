package collections

import (
	"github.com/pmemgo/pmemgo/heap"
)

// Delete removes k and reports whether it was there. A leaf left with
// fewer than a quarter of its slots is merged with a sibling when the two
// fit in one node, and so on up the tree; the node merged away is freed,
// as are a string key and value.
func (m *BTreeMap[K, V]) Delete(tx *heap.Tx, k K) (bool, error) {
	ko, err := keysOf[K]()
	if err != nil {
		return false, err
	}
	vo := valsOf[V]()
	if m.height == 0 && m.leaf == nil {
		return false, nil
	}
	var p path[K, V]
	l := m.descend(ko.cmp, k, &p)
	j, found := l.search(ko.cmp, k)
	if !found {
		return false, nil
	}
	s := l.order[j]
	oldK, oldV := l.keys[s], l.vals[s]
	clear := ko.str || vo.pointers
	ranges := []heap.Range{l.hdr(), rng(&m.count)}
	if clear {
		ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
	}
	merges, borrow, collapse := m.planMerges(&p, int(l.n)-1, &ranges)
	if err := tx.AddRanges(ranges...); err != nil {
		return false, err
	}
	copy(l.order[j:], l.order[j+1:l.n])
	l.n--
	if clear {
		l.clearSlot(s)
	}
	m.count--
	if err := ko.free(tx, oldK); err != nil {
		return false, err
	}
	if err := vo.free(tx, oldV); err != nil {
		return false, err
	}
	for t := range merges {
		st := p.steps[p.n-1-t]
		if err := m.merge(tx, ko, st.node, mergePair(st.i, int(st.node.n)), t == 0); err != nil {
			return false, err
		}
	}
	if borrow {
		st := p.steps[p.n-1-merges]
		st.node.borrow(mergePair(st.i, int(st.node.n)), st.i)
	}
	if collapse {
		return true, m.collapse(tx)
	}
	return true, nil
}

// mergePair returns the index of the left child of the pair that child i
// merges with: its right sibling, or its left one for the last child.
func mergePair(i, n int) int {
	if i == n {
		return i - 1
	}
	return i
}

// planMerges decides, from the leaf up, which levels merge after the leaf
// on path p drops to n entries, adds the nodes they change to ranges (whole:
// merges are rare) and reports whether the root is left with one child.
// An inner node that a merge below leaves with no key and that cannot
// merge with its sibling (the sibling is nearly full) takes a child from
// the sibling instead (borrow, at the level above the merges): left
// keyless, its leaf could later empty with no sibling in the node to merge
// with.
func (m *BTreeMap[K, V]) planMerges(p *path[K, V], n int, ranges *[]heap.Range) (merges int, borrow, collapse bool) {
	lowest, capacity, extra := leafMin, leafCap, 0
	for lvl := p.n - 1; lvl >= 0 && n < lowest; lvl-- {
		in, i := p.steps[lvl].node, p.steps[lvl].i
		if in.n == 0 {
			break
		}
		li := mergePair(i, int(in.n))
		var sibN int
		if extra == 0 {
			a, b := in.leaves[li], in.leaves[li+1]
			sibN = int(a.n) + int(b.n) - (n + 1)
			*ranges = append(*ranges, rng(a), rng(b))
		} else {
			a, b := in.kids[li], in.kids[li+1]
			sibN = int(a.n) + int(b.n) - (n + 1)
			*ranges = append(*ranges, rng(a), rng(b))
		}
		if n+sibN+extra > capacity {
			if extra == 1 && n == 0 {
				*ranges = append(*ranges, rng(in))
				borrow = true
				break
			}
			*ranges = (*ranges)[:len(*ranges)-2]
			break
		}
		*ranges = append(*ranges, rng(in))
		merges++
		n = int(in.n) - 1
		lowest, capacity, extra = innerMin, innerCap, 1
		if lvl == 0 && n == 0 {
			*ranges = append(*ranges, rng(m))
			collapse = true
		}
	}
	return merges, borrow, collapse
}

// borrow moves one child, through the separator key li, between children
// li and li+1 of in, into child i, which has no key: the first child of
// its right sibling, or the last of its left one when it is the last
// child. Keys move, none is copied, so a string key keeps one owner.
// planMerges logged the three nodes.
func (in *innerNode[K, V]) borrow(li, i int) {
	var zk K
	a, b := in.kids[li], in.kids[li+1]
	if li == i {
		na, nb := int(a.n), int(b.n)
		a.keys[na] = in.keys[li]
		a.kids[na+1], a.leaves[na+1] = b.kids[0], b.leaves[0]
		a.n++
		in.keys[li] = b.keys[0]
		copy(b.keys[:nb-1], b.keys[1:nb])
		b.keys[nb-1] = zk
		copy(b.kids[:nb], b.kids[1:nb+1])
		copy(b.leaves[:nb], b.leaves[1:nb+1])
		b.kids[nb], b.leaves[nb] = nil, nil
		b.n--
		return
	}
	na, nb := int(a.n), int(b.n)
	copy(b.keys[1:nb+1], b.keys[:nb])
	b.keys[0] = in.keys[li]
	copy(b.kids[1:nb+2], b.kids[:nb+1])
	copy(b.leaves[1:nb+2], b.leaves[:nb+1])
	b.kids[0], b.leaves[0] = a.kids[na], a.leaves[na]
	b.n++
	in.keys[li] = a.keys[na-1]
	a.keys[na-1] = zk
	a.kids[na], a.leaves[na] = nil, nil
	a.n--
}

// merge merges children li and li+1 of in into li; leaf says whether the
// children are leaves. planMerges logged every node it changes. The node
// merged away is cleared before it is freed: the commit checks the
// pointers of a node this transaction allocated even when it frees it,
// and what it pointed to may be freed later in the transaction.
func (m *BTreeMap[K, V]) merge(tx *heap.Tx, ko *keyOps[K], in *innerNode[K, V], li int, leaf bool) error {
	if leaf {
		a, b := in.leaves[li], in.leaves[li+1]
		for q := range int(b.n) {
			a.order[a.n] = a.freeSlot()
			a.keys[a.order[a.n]], a.vals[a.order[a.n]] = b.key(q), b.val(q)
			a.n++
		}
		if err := ko.free(tx, in.keys[li]); err != nil {
			return err
		}
		in.removeAt(li)
		*b = leafNode[K, V]{}
		return heap.Free(tx, b)
	}
	a, b := in.kids[li], in.kids[li+1]
	an := int(a.n)
	a.keys[an] = in.keys[li]
	copy(a.keys[an+1:], b.keys[:b.n])
	copy(a.kids[an+1:], b.kids[:b.n+1])
	copy(a.leaves[an+1:], b.leaves[:b.n+1])
	a.n += b.n + 1
	in.removeAt(li)
	*b = innerNode[K, V]{}
	return heap.Free(tx, b)
}

// collapse replaces a root inner node left with one child by that child.
func (m *BTreeMap[K, V]) collapse(tx *heap.Tx) error {
	old := m.root
	if m.height == 1 {
		m.root, m.leaf = nil, old.leaves[0]
	} else {
		m.root = old.kids[0]
	}
	m.height--
	*old = innerNode[K, V]{}
	return heap.Free(tx, old)
}
