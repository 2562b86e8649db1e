package collections

import (
	"math/bits"
	"unsafe"

	"github.com/pmemgo/pmemgo/heap"
)

// Node capacities. A leaf's keys fill a few cache lines (16 keys of 16
// bytes are four), so a binary search in a leaf touches few lines; an
// inner node's 32 keys keep a 1M-key tree four levels deep.
const (
	leafCap  = 16
	leafMin  = leafCap / 4
	innerCap = 32
	innerMin = innerCap / 4
	maxDepth = 40
)

// leafNode holds entries in slots that never move: order lists the slots
// by ascending key. Inserting writes a free slot and shifts order (17
// bytes), so a Put logs that and the slot, not the entries after it.
type leafNode[K comparable, V any] struct {
	n     uint8
	order [leafCap]uint8
	keys  [leafCap]K
	vals  [leafCap]V
}

// hdr is the range of n and order, which every insert and delete changes.
func (l *leafNode[K, V]) hdr() heap.Range {
	return heap.Range{Ptr: unsafe.Pointer(&l.n), Len: 1 + leafCap}
}

func (l *leafNode[K, V]) key(i int) K { return l.keys[l.order[i]] }
func (l *leafNode[K, V]) val(i int) V { return l.vals[l.order[i]] }

// freeSlot returns a slot that order does not list; the leaf must not be
// full.
func (l *leafNode[K, V]) freeSlot() uint8 {
	var used uint32
	for _, s := range l.order[:l.n] {
		used |= 1 << s
	}
	return uint8(bits.TrailingZeros32(^used))
}

// search returns the position in order of the first key >= k and whether
// that key is k.
func (l *leafNode[K, V]) search(c func(a, b K) int, k K) (int, bool) {
	lo, hi := 0, int(l.n)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if c(l.keys[l.order[mid]], k) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < int(l.n) && c(l.keys[l.order[lo]], k) == 0
}

// put stores k, v in the free slot s and lists it at position j.
func (l *leafNode[K, V]) put(j int, s uint8, k K, v V) {
	l.keys[s], l.vals[s] = k, v
	copy(l.order[j+1:l.n+1], l.order[j:l.n])
	l.order[j] = s
	l.n++
}

// clearSlot zeroes slot s so that no stale pointer stays in the leaf.
func (l *leafNode[K, V]) clearSlot(s uint8) {
	var k K
	var v V
	l.keys[s], l.vals[s] = k, v
}

// innerNode separates n+1 children with n keys: child i holds the keys in
// [keys[i-1], keys[i]). The children are inner nodes (kids) or, one level
// above the leaves, leaves; the other array stays nil. Entries past n are
// kept zero, so a node holds no pointer to what it no longer owns.
type innerNode[K comparable, V any] struct {
	n      uint32
	keys   [innerCap]K
	kids   [innerCap + 1]*innerNode[K, V]
	leaves [innerCap + 1]*leafNode[K, V]
}

// child returns the index of the child whose range holds k: the number of
// keys <= k.
func (in *innerNode[K, V]) child(c func(a, b K) int, k K) int {
	lo, hi := 0, int(in.n)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if c(in.keys[mid], k) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// shiftRanges are the ranges insert(i, ...) changes.
func (in *innerNode[K, V]) shiftRanges(i int) []heap.Range {
	n := int(in.n)
	var zk K
	var zp unsafe.Pointer
	return []heap.Range{
		rng(&in.n),
		{Ptr: unsafe.Pointer(&in.keys[i]), Len: uintptr(n+1-i) * unsafe.Sizeof(zk)},
		{Ptr: unsafe.Pointer(&in.kids[i+1]), Len: uintptr(n+1-i) * unsafe.Sizeof(zp)},
		{Ptr: unsafe.Pointer(&in.leaves[i+1]), Len: uintptr(n+1-i) * unsafe.Sizeof(zp)},
	}
}

// insert puts k at keys[i] and the new child right of it; the node must
// not be full. One of kid and leaf is nil.
func (in *innerNode[K, V]) insert(i int, k K, kid *innerNode[K, V], leaf *leafNode[K, V]) {
	n := int(in.n)
	copy(in.keys[i+1:n+1], in.keys[i:n])
	in.keys[i] = k
	copy(in.kids[i+2:n+2], in.kids[i+1:n+1])
	copy(in.leaves[i+2:n+2], in.leaves[i+1:n+1])
	in.kids[i+1], in.leaves[i+1] = kid, leaf
	in.n++
}

// splitInsert inserts into a full node, keeps the lower half, moves the
// upper half to the new node right and returns the middle key, which
// moves up to the parent.
func (in *innerNode[K, V]) splitInsert(i int, k K, kid *innerNode[K, V], leaf *leafNode[K, V], right *innerNode[K, V]) K {
	var keys [innerCap + 1]K
	var kids [innerCap + 2]*innerNode[K, V]
	var leaves [innerCap + 2]*leafNode[K, V]
	copy(keys[:i], in.keys[:i])
	keys[i] = k
	copy(keys[i+1:], in.keys[i:])
	copy(kids[:i+1], in.kids[:i+1])
	kids[i+1] = kid
	copy(kids[i+2:], in.kids[i+1:])
	copy(leaves[:i+1], in.leaves[:i+1])
	leaves[i+1] = leaf
	copy(leaves[i+2:], in.leaves[i+1:])

	const h = (innerCap + 1) / 2
	*in = innerNode[K, V]{n: h}
	copy(in.keys[:], keys[:h])
	copy(in.kids[:], kids[:h+1])
	copy(in.leaves[:], leaves[:h+1])
	right.n = innerCap - h
	copy(right.keys[:], keys[h+1:])
	copy(right.kids[:], kids[h+1:])
	copy(right.leaves[:], leaves[h+1:])
	return keys[h]
}

// removeAt drops keys[i] and child i+1.
func (in *innerNode[K, V]) removeAt(i int) {
	n := int(in.n)
	var zk K
	copy(in.keys[i:n-1], in.keys[i+1:n])
	in.keys[n-1] = zk
	copy(in.kids[i+1:n], in.kids[i+2:n+1])
	copy(in.leaves[i+1:n], in.leaves[i+2:n+1])
	in.kids[n], in.leaves[n] = nil, nil
	in.n--
}
