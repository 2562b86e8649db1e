package collections

import (
	"math/bits"

	"github.com/pmemgo/pmemgo/heap"
)

// shiftLeft makes room in the full leaf l, child i of parent, by moving
// its smallest entries (the new one included, if it is among them) to
// its left sibling, which has room for two or more, and raising the
// separator between them. Splitting only when the sibling is full too
// keeps leaves fuller after random inserts than splitting at once would,
// which is what bytes per key are made of.
func (m *BTreeMap[K, V]) shiftLeft(tx *heap.Tx, ko *keyOps[K], vo valOps[V], parent *innerNode[K, V], i int, l *leafNode[K, V], j int, key K, val V) error {
	left := parent.leaves[i-1]
	moves := (leafCap - int(left.n)) / 2
	// The merged sequence is l's entries with the new one at j; its first
	// moves entries go left, to free slots of left taken in order.
	var free []uint8
	var used uint32
	for _, s := range left.order[:left.n] {
		used |= 1 << s
	}
	for len(free) < moves {
		s := uint8(bits.TrailingZeros32(^used))
		used |= 1 << s
		free = append(free, s)
	}
	fromL := moves // entries of l that move
	if j < moves {
		fromL--
	}
	clear := ko.str || vo.pointers
	ranges := []heap.Range{left.hdr(), l.hdr(), rng(&m.count), rng(&parent.keys[i-1])}
	for _, s := range free {
		ranges = append(ranges, rng(&left.keys[s]), rng(&left.vals[s]))
	}
	if clear {
		for _, s := range l.order[:fromL] {
			ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
		}
	}
	if j >= moves {
		// The new entry stays in l, in the first slot that a move frees.
		s := l.order[0]
		ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
	}
	if err := tx.AddRanges(ranges...); err != nil {
		return err
	}

	q := 0 // next entry of l to consider
	for t, s := range free {
		if t == j {
			left.keys[s], left.vals[s] = key, val
		} else {
			ls := l.order[q]
			left.keys[s], left.vals[s] = l.keys[ls], l.vals[ls]
			if clear {
				l.clearSlot(ls)
			}
			q++
		}
		left.order[left.n] = s
		left.n++
	}
	freed := l.order[0]
	copy(l.order[:], l.order[q:l.n])
	l.n -= uint8(q)
	if j >= moves {
		l.put(j-moves, freed, key, val)
	}
	m.count++
	sep, err := ko.persist(tx, l.key(0))
	if err != nil {
		return err
	}
	old := parent.keys[i-1]
	parent.keys[i-1] = sep
	return ko.free(tx, old)
}
