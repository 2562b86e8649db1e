package collections

import "fmt"

// checker walks a tree for Check. lo and hi bound a subtree's keys: lo
// inclusive, hi exclusive, nil for no bound.
type checker[K comparable, V any] struct {
	c      func(a, b K) int
	seen   map[any]bool
	keys   int
	leaves int
	last   *K
}

func (ck *checker[K, V]) visit(p any) error {
	if ck.seen[p] {
		return fmt.Errorf("node %p reachable twice", p)
	}
	ck.seen[p] = true
	return nil
}

func (ck *checker[K, V]) inBounds(k K, lo, hi *K) bool {
	return (lo == nil || ck.c(*lo, k) <= 0) && (hi == nil || ck.c(k, *hi) < 0)
}

func (ck *checker[K, V]) leaf(l *leafNode[K, V], lo, hi *K) error {
	if err := ck.visit(l); err != nil {
		return err
	}
	ck.leaves++
	if l.n > leafCap {
		return fmt.Errorf("leaf %p: %d entries", l, l.n)
	}
	var used uint32
	for j, s := range l.order[:l.n] {
		if s >= leafCap || used&(1<<s) != 0 {
			return fmt.Errorf("leaf %p: order[%d] = %d: out of range or listed twice", l, j, s)
		}
		used |= 1 << s
		k := l.keys[s]
		if !ck.inBounds(k, lo, hi) {
			return fmt.Errorf("leaf %p: key %v outside its parent's bounds", l, k)
		}
		if ck.last != nil && ck.c(*ck.last, k) >= 0 {
			return fmt.Errorf("leaf %p: key %v after %v", l, k, *ck.last)
		}
		ck.last = &l.keys[s]
		ck.keys++
	}
	return nil
}

func (ck *checker[K, V]) inner(in *innerNode[K, V], h uint32, lo, hi *K) error {
	if err := ck.visit(in); err != nil {
		return err
	}
	n := int(in.n)
	if n > innerCap {
		return fmt.Errorf("inner node %p: %d keys", in, n)
	}
	var zk K
	for i := range innerCap + 1 {
		if i >= n+1 {
			if in.kids[i] != nil || in.leaves[i] != nil || in.keys[i-1] != zk {
				return fmt.Errorf("inner node %p: entry %d past its %d keys is not zero", in, i, n)
			}
			continue
		}
		if i < n && !ck.inBounds(in.keys[i], lo, hi) {
			return fmt.Errorf("inner node %p: key %v outside its parent's bounds", in, in.keys[i])
		}
		if i > 0 && i < n && ck.c(in.keys[i-1], in.keys[i]) >= 0 {
			return fmt.Errorf("inner node %p: key %v after %v", in, in.keys[i], in.keys[i-1])
		}
		clo, chi := lo, hi
		if i > 0 {
			clo = &in.keys[i-1]
		}
		if i < n {
			chi = &in.keys[i]
		}
		if h == 1 {
			if in.leaves[i] == nil || in.kids[i] != nil {
				return fmt.Errorf("inner node %p at height 1: child %d is not a leaf", in, i)
			}
			if in.leaves[i].n == 0 {
				return fmt.Errorf("inner node %p: leaf %d is empty", in, i)
			}
			if err := ck.leaf(in.leaves[i], clo, chi); err != nil {
				return err
			}
			continue
		}
		if in.kids[i] == nil || in.leaves[i] != nil {
			return fmt.Errorf("inner node %p at height %d: child %d is not an inner node", in, h, i)
		}
		if err := ck.inner(in.kids[i], h-1, clo, chi); err != nil {
			return err
		}
	}
	return nil
}
