// Package swizzle rewrites the pointers stored in a pool when the pool is
// mapped at a new base.
//
// The rewrite works slab by slab, in parallel, and records its progress per
// slab: a slab is stamped with the swizzle generation once its rewritten
// pointers are durable. It never logs a pointer. What makes a crash in the
// middle harmless is the relocation table: every base that a not yet
// rewritten pointer may be relative to is kept in the pool header, and the
// address ranges of those bases and of the target are pairwise disjoint, so
// each stored pointer has exactly one reading. Rewriting is idempotent, and
// a later open at yet another base simply adds the interrupted target to
// the table.
package swizzle

import "fmt"

// Table maps the address ranges a stored pointer may be in to the target
// base. All ranges are Size bytes long and pairwise disjoint.
type Table struct {
	Old    []uint64
	Target uint64
	Size   uint64
	// Resuming is set when an interrupted swizzle to the same Target goes
	// on: only then may a pointer already hold a Target address. In a fresh
	// swizzle such a pointer is corruption that happens to look relocated.
	Resuming bool
}

// Relocate returns the value pointer p must have at the target base. It
// returns false when p is in none of the ranges: the pointer is corrupt.
// Nil stays nil.
func (t *Table) Relocate(p uint64) (uint64, bool) {
	if p == 0 {
		return 0, true
	}
	if p-t.Target < t.Size {
		return p, t.Resuming
	}
	for _, o := range t.Old {
		if p-o < t.Size {
			return p - o + t.Target, true
		}
	}
	return 0, false
}

// String describes the table for messages.
func (t *Table) String() string {
	s := ""
	for i, o := range t.Old {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("[%#x, %#x)", o, o+t.Size)
	}
	return fmt.Sprintf("{%s} -> %#x", s, t.Target)
}
