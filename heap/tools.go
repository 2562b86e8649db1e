package heap

import (
	"errors"
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// This file holds small APIs for tools, such as pmemctl gc, that work on
// a pool by its slots rather than through typed Go pointers. Applications
// should not need them.

// Reach is for tools: it walks the object graph from the root, as
// recovery.Walk does, over the pool's bytes as the last commit left them,
// and reports which allocated slots it reached. It does not see what the
// running transaction allocated or freed, so it refuses to run once the
// transaction has done either; call it first. The result reads the pool's
// mapping and is valid until the transaction ends. progress is passed to
// recovery.Walk.
func (tx *Tx) Reach(progress func(reached, allocated int64)) (*recovery.Reach, error) {
	if err := tx.usable(false); err != nil {
		return nil, err
	}
	if len(tx.allocs) > 0 || len(tx.frees) > 0 {
		return nil, errors.New("reach: the transaction has already allocated or freed, which the walk would not see")
	}
	h := tx.h
	stored := *h.types.snapshot.Load()
	types := make([]layout.TypeDesc, len(stored))
	for i, ti := range stored {
		types[i] = ti.desc
	}
	img := &recovery.Image{Mem: h.mem, Base: uint64(h.base), Header: h.pool.Header, State: h.state, Types: types}
	return recovery.Walk(img, progress)
}

// FreeOffset is for tools, which find what to free by walking the pool
// (see Reach) rather than holding typed pointers: it frees, at commit, the
// allocated slot that starts at pool offset off, object or array, whatever
// its type. Free, FreeSlice and FreeString are the typed equivalents
// applications use. An offset that is not the start of an allocated slot,
// the root object, and a slot the transaction already frees are refused
// with pmemgo.ErrInvalidFree.
func (tx *Tx) FreeOffset(off uint64) error {
	if err := tx.usable(true); err != nil {
		return err
	}
	s, slot, within, ok := tx.h.alloc.lookup(off)
	switch {
	case !ok:
		return fmt.Errorf("free at offset %d: not in the slots of a slab in use: %w", off, pmemgo.ErrInvalidFree)
	case within != 0:
		return fmt.Errorf("free at offset %d: %d bytes into slab %d slot %d: %w", off, within, s.idx, slot, pmemgo.ErrInvalidFree)
	case off == tx.state.RootOff:
		return fmt.Errorf("free of the root object at offset %d: %w", off, pmemgo.ErrInvalidFree)
	}
	return tx.freeSlot(s, slot)
}
