package heap

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math/bits"
	"reflect"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
	"github.com/pmemgo/pmemgo/slab"
)

// Objects iterates over every live object of type T in the pool: each
// object New[T] allocated and no transaction freed, the root included,
// reachable or not. It is the way back to objects whose last pointer was
// lost. Elements of slices made by MakeSlice are not objects and are not
// yielded.
//
// The iteration is valid inside the View or Update that tx belongs to. In
// an Update it sees the transaction's own allocations made before it
// reaches their slab, and skips the objects the transaction freed. Objects
// come slab by slab, in no particular order.
//
// An error ends the iteration: ErrTxClosed when tx has ended,
// ErrTypeMismatch when the pool stores another layout under T's name,
// ErrCorrupt (naming the slab) when a slab header the pool was opened
// without validating turns out damaged. A type the pool has never stored
// yields nothing.
func Objects[T any](tx *Tx) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		ti, err := tx.storedType(reflect.TypeFor[T]())
		if err != nil || ti == nil {
			if err != nil {
				yield(nil, err)
			}
			return
		}
		a := tx.h.alloc
		// The slabs are listed first: the transaction may add some while
		// the caller handles the objects.
		var heads []int32
		a.eachHead(func(i uint32, sh *layout.SlabHeader, _ uint32) {
			if sh.Kind == layout.KindObjects && sh.Type == ti.id {
				heads = append(heads, int32(i))
			}
		})
		slabs := make([]*slabRef, len(heads))
		for k, i := range heads {
			slabs[k] = a.refFor(tx, i)
		}
		for _, s := range slabs {
			if !objectsOf(tx, s, yield) {
				return
			}
		}
	}
}

// objectsOf yields the allocated objects of slab s and reports whether
// the iteration goes on.
func objectsOf[T any](tx *Tx, s *slabRef, yield func(*T, error) bool) bool {
	words, err := tx.slabBits(s)
	if err != nil {
		yield(nil, err)
		return false
	}
	a := tx.h.alloc
	for w := range words {
		// Each word is read when reached: in an Update, the caller may
		// allocate in this slab while it iterates.
		for set := words[w]; set != 0; set &= set - 1 {
			slot := uint32(w*64 + bits.TrailingZeros64(set))
			off := a.slotOff(s, slot)
			if tx.freed[off] {
				continue
			}
			if !yield((*T)(tx.h.at(off)), nil) {
				return false
			}
		}
	}
	return true
}

// storedType returns the stored type of Go type rt, or nil when the pool
// stores no type of its name. Unlike typeOf it never adds the type to the
// pool.
func (tx *Tx) storedType(rt reflect.Type) (*typeInfo, error) {
	if err := tx.usable(false); err != nil {
		return nil, err
	}
	r := tx.h.types
	if m := r.checked.Load(); m != nil {
		if ti := (*m)[rt]; ti != nil {
			return ti, nil
		}
	}
	d, err := slab.Describe(rt)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	ti := r.byName[d.Name]
	r.mu.Unlock()
	if ti != nil && ti.desc.Hash != d.Hash {
		return nil, fmt.Errorf("type %s: %s: %w", d.Name, slab.Diff(&ti.desc, d), pmemgo.ErrTypeMismatch)
	}
	return ti, nil
}

// slabBits returns the allocation bitmap of s as the transaction sees it.
// A slab known only from the slab summary is validated first: an Update
// loads it for good, a View, which must not change the allocator, reads
// its header and bitmap from the pool each time.
func (tx *Tx) slabBits(s *slabRef) ([]uint64, error) {
	a := tx.h.alloc
	switch {
	case s.loaded:
		return s.bits, nil
	case tx.writable:
		if err := a.load(s); err != nil {
			return nil, err
		}
		return s.bits, nil
	}
	sh, err := recovery.LoadSlab(tx.h.mem, a.hdr, s.idx, &s.sh)
	if err != nil {
		return nil, err
	}
	bm := layout.Bitmap(tx.h.mem[a.hdr.SlabOffset(s.idx):], sh.Slots)
	words := make([]uint64, len(bm)/8)
	for w := range words {
		words[w] = binary.LittleEndian.Uint64(bm[w*8:])
	}
	return words, nil
}
