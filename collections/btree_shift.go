package collections

import (
	"math/bits"

	"github.com/pmemgo/pmemgo/heap"
)

// freeSlots returns n slots that order does not list.
func (l *leafNode[K, V]) freeSlots(n int) []uint8 {
	var used uint32
	for _, s := range l.order[:l.n] {
		used |= 1 << s
	}
	free := make([]uint8, 0, n)
	for len(free) < n {
		s := uint8(bits.TrailingZeros32(^used))
		used |= 1 << s
		free = append(free, s)
	}
	return free
}

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
	free := left.freeSlots(moves)
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

// shiftRight is shiftLeft towards the right sibling: the largest entries
// of l (the new one included, if it is among them) move to the front of
// child i+1, whose separator is lowered to the smallest of them.
func (m *BTreeMap[K, V]) shiftRight(tx *heap.Tx, ko *keyOps[K], vo valOps[V], parent *innerNode[K, V], i int, l *leafNode[K, V], j int, key K, val V) error {
	right := parent.leaves[i+1]
	moves := (leafCap - int(right.n)) / 2
	first := leafCap + 1 - moves // index of the first moved entry in the merged sequence
	free := right.freeSlots(moves)
	stays := j < first
	fromL := moves // entries of l that move: its last ones
	if !stays {
		fromL--
	}
	clear := ko.str || vo.pointers
	ranges := []heap.Range{right.hdr(), l.hdr(), rng(&m.count), rng(&parent.keys[i])}
	for _, s := range free {
		ranges = append(ranges, rng(&right.keys[s]), rng(&right.vals[s]))
	}
	moved := l.order[leafCap-fromL : leafCap]
	if clear {
		for _, s := range moved {
			ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
		}
	}
	if stays {
		// The new entry takes the slot of l's last entry, which moves.
		s := l.order[leafCap-1]
		ranges = append(ranges, rng(&l.keys[s]), rng(&l.vals[s]))
	}
	if err := tx.AddRanges(ranges...); err != nil {
		return err
	}

	copy(right.order[moves:], right.order[:right.n])
	q := 0 // next moved entry of l
	for t, s := range free {
		if first+t == j {
			right.keys[s], right.vals[s] = key, val
		} else {
			ls := moved[q]
			right.keys[s], right.vals[s] = l.keys[ls], l.vals[ls]
			if clear {
				l.clearSlot(ls)
			}
			q++
		}
		right.order[t] = s
	}
	right.n += uint8(moves)
	freed := l.order[leafCap-1]
	l.n -= uint8(fromL)
	if stays {
		l.put(j, freed, key, val)
	}
	m.count++
	sep, err := ko.persist(tx, right.key(0))
	if err != nil {
		return err
	}
	old := parent.keys[i]
	parent.keys[i] = sep
	return ko.free(tx, old)
}
