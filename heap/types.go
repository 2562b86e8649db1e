package heap

import (
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/slab"
)

// typeInfo is a type stored in the pool.
type typeInfo struct {
	id   uint32
	desc layout.TypeDesc
}

// registry knows the pool's stored types and which Go types were checked
// against them. Views consult it concurrently, so it has its own lock.
type registry struct {
	mu     sync.Mutex
	stored []*typeInfo // type id i is stored[i-1]
	// snapshot is stored as of the last change, for lock-free reads.
	snapshot atomic.Pointer[[]*typeInfo]
	byName   map[string]*typeInfo
	byType   map[reflect.Type]*typeInfo
	// checked is a copy of byType as of its last change, for lock-free
	// lookups of Go types already checked.
	checked atomic.Pointer[map[reflect.Type]*typeInfo]
}

// publish makes the current byType visible to lock-free lookups; the
// caller holds mu.
func (r *registry) publish() {
	m := make(map[reflect.Type]*typeInfo, len(r.byType))
	for t, ti := range r.byType {
		m[t] = ti
	}
	r.checked.Store(&m)
}

func newRegistry(descs []layout.TypeDesc) *registry {
	r := &registry{byName: map[string]*typeInfo{}, byType: map[reflect.Type]*typeInfo{}}
	r.snapshot.Store(&r.stored)
	for i := range descs {
		r.put(&typeInfo{id: uint32(i + 1), desc: descs[i]})
	}
	return r
}

func (r *registry) put(ti *typeInfo) {
	r.stored = append(r.stored[:len(r.stored):len(r.stored)], ti)
	r.snapshot.Store(&r.stored)
	r.byName[ti.desc.Name] = ti
}

// byID returns the stored type with id, or nil. It takes no lock: commits
// call it for every object they check, and the list it reads is replaced,
// never changed in place.
func (r *registry) byID(id uint32) *typeInfo {
	stored := *r.snapshot.Load()
	if id == 0 || int(id) > len(stored) {
		return nil
	}
	return stored[id-1]
}

// typeOf returns the stored type for Go type rt. A type met for the first
// time is checked against the pool's stored layout of the same name; in a
// writable transaction a type the pool does not know yet is added, with
// every type its pointers refer to.
func (tx *Tx) typeOf(rt reflect.Type) (*typeInfo, error) {
	r := tx.h.types
	if m := r.checked.Load(); m != nil {
		if ti := (*m)[rt]; ti != nil {
			return ti, nil
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ti := r.byType[rt]; ti != nil {
		return ti, nil
	}
	// The whole closure is described first, so that a type refused
	// anywhere in it leaves the pool unchanged.
	c := closureOf(rt)
	if c.err != nil {
		return nil, c.err
	}
	closure, descs := c.types, c.descs
	var added []int
	for i, d := range descs {
		if ti := r.byName[d.Name]; ti != nil {
			if ti.desc.Hash != d.Hash {
				return nil, fmt.Errorf("type %s: %s: %w", d.Name, slab.Diff(&ti.desc, d), pmemgo.ErrTypeMismatch)
			}
			continue
		}
		if !tx.writable {
			return nil, fmt.Errorf("type %s is not stored in the pool (a read-only transaction cannot add it): %w", d.Name, pmemgo.ErrTypeMismatch)
		}
		added = append(added, i)
	}
	for _, i := range added {
		if err := tx.storeType(descs[i]); err != nil {
			return nil, err
		}
	}
	for i, t := range closure {
		r.byType[t] = r.byName[descs[i].Name]
	}
	r.publish()
	return r.byType[rt], nil
}

// closure is a Go type, the types its pointers, slices and strings reach,
// and their descriptors, in the order found.
type closure struct {
	types []reflect.Type
	descs []*layout.TypeDesc
	err   error
}

// closures caches the closure of each Go type met (reflect.Type ->
// *closure): a type's layout is fixed for the life of the process, and
// describing it with reflect is most of what the first use of a type
// costs, at each open of a pool. Its descriptors are shared and never
// changed.
var closures sync.Map

// closureOf returns the closure of rt, or the error of the first of its
// types that cannot be stored.
func closureOf(rt reflect.Type) *closure {
	if c, ok := closures.Load(rt); ok {
		return c.(*closure)
	}
	c := &closure{types: []reflect.Type{rt}}
	seen := map[reflect.Type]bool{rt: true}
	for i := 0; i < len(c.types); i++ {
		d, err := slab.Describe(c.types[i])
		if err != nil {
			c.types, c.descs, c.err = nil, nil, err
			break
		}
		c.descs = append(c.descs, d)
		for _, t := range slab.Targets(c.types[i]) {
			if !seen[t] {
				seen[t] = true
				c.types = append(c.types, t)
			}
		}
	}
	closures.Store(rt, c)
	return c
}

// storeType appends a descriptor to the type table. The bytes go past the
// committed end of the table, so they need no undo logging: rolling back
// the heap state forgets them.
func (tx *Tx) storeType(d *layout.TypeDesc) error {
	h := tx.h
	payload, err := d.MarshalBinary()
	if err != nil {
		return fmt.Errorf("type %s: %w", d.Name, err)
	}
	n := layout.TypeEntrySize(len(payload))
	hdr := &h.pool.Header
	if tx.state.TypeBytes+uint64(n) > hdr.TypeSize {
		return fmt.Errorf("type table is full (%d of %d bytes) adding %s: %w", tx.state.TypeBytes, hdr.TypeSize, d.Name, pmemgo.ErrNoSpace)
	}
	if err := tx.touchState(); err != nil {
		return err
	}
	off := hdr.TypeOff + tx.state.TypeBytes
	h.cow(off, uint64(n))
	layout.EncodeTypeEntry(h.mem[off:], payload)
	tx.flushLater(off, uint64(n))
	tx.state.TypeBytes += uint64(n)
	tx.state.Types++
	ti := &typeInfo{id: tx.state.Types, desc: *d}
	h.types.put(ti)
	tx.newTypes = append(tx.newTypes, ti)
	return nil
}

// forget drops the types a rolled-back transaction added.
func (r *registry) forget(added []*typeInfo) {
	if len(added) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	gone := map[*typeInfo]bool{}
	for _, ti := range added {
		gone[ti] = true
		delete(r.byName, ti.desc.Name)
	}
	r.stored = r.stored[: len(r.stored)-len(added) : len(r.stored)-len(added)]
	r.snapshot.Store(&r.stored)
	for t, ti := range r.byType {
		if gone[ti] {
			delete(r.byType, t)
		}
	}
	r.publish()
}
