package collections

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestInnerBorrow moves a child into a keyless inner node from its right
// sibling, and into a keyless last child from its left sibling: keys
// rotate through the parent's separator, children move with them, and
// the entries the giver no longer uses are zero.
func TestInnerBorrow(t *testing.T) {
	leaves := func(n int) []*leafNode[int, int] {
		out := make([]*leafNode[int, int], n)
		for i := range out {
			out[i] = &leafNode[int, int]{}
		}
		return out
	}
	t.Run("from the right", func(t *testing.T) {
		l, m := leaves(1), leaves(4)
		a := &innerNode[int, int]{n: 0}
		a.leaves[0] = l[0]
		b := &innerNode[int, int]{n: 3}
		copy(b.keys[:], []int{110, 120, 130})
		copy(b.leaves[:], m)
		in := &innerNode[int, int]{n: 1}
		in.keys[0], in.kids[0], in.kids[1] = 100, a, b
		in.borrow(0, 0)
		assert.Equal(t, uint32(1), a.n)
		assert.Equal(t, 100, a.keys[0])
		assert.Equal(t, []*leafNode[int, int]{l[0], m[0]}, a.leaves[:2])
		assert.Equal(t, 110, in.keys[0])
		assert.Equal(t, uint32(2), b.n)
		assert.Equal(t, []int{120, 130, 0}, b.keys[:3])
		assert.Equal(t, []*leafNode[int, int]{m[1], m[2], m[3], nil}, b.leaves[:4])
	})
	t.Run("from the left", func(t *testing.T) {
		l, m := leaves(4), leaves(1)
		a := &innerNode[int, int]{n: 3}
		copy(a.keys[:], []int{10, 20, 30})
		copy(a.leaves[:], l)
		b := &innerNode[int, int]{n: 0}
		b.leaves[0] = m[0]
		in := &innerNode[int, int]{n: 1}
		in.keys[0], in.kids[0], in.kids[1] = 100, a, b
		in.borrow(0, 1)
		assert.Equal(t, uint32(1), b.n)
		assert.Equal(t, 100, b.keys[0])
		assert.Equal(t, []*leafNode[int, int]{l[3], m[0]}, b.leaves[:2])
		assert.Equal(t, 30, in.keys[0])
		assert.Equal(t, uint32(2), a.n)
		assert.Equal(t, []int{10, 20, 0}, a.keys[:3])
		assert.Equal(t, []*leafNode[int, int]{l[0], l[1], l[2], nil}, a.leaves[:4])
	})
}
