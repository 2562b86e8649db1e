package recovery

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/swizzle"
)

// verifyPointers applies the checker's pointer rules (see ptrRules) to
// every allocated slot of the pool, on workers goroutines, and returns
// the first pointer found breaking one, as an error naming the slab,
// slot, type and field. With a table, pointers are read through it, as a
// swizzle for it would rewrite them, and slabs stamped with gen must hold
// pointers relative to its target already; without one, pointers are
// relative to the pool's base. It needs p.Slabs built from every slab
// header, not from the slab summary: it reads every bitmap.
func (p *Pool) verifyPointers(table *swizzle.Table, gen uint64, workers int) error {
	high := p.State.SlabHigh
	r := &ptrRules{h: p.Header, mem: p.Dev.Bytes(), types: p.Types, stateHigh: high, high: high}
	if table != nil {
		r.swizzling, r.table, r.gen = true, *table, gen
	}
	var err error
	r.targets, _ = pointerTargets(p.Types, func(id int, ptr layout.Pointer) bool {
		err = fmt.Errorf("type table: type %d (%s) field %s points to type %s, which the table lacks: %w",
			id, p.Types[id-1].Name, ptrField(ptr), ptr.Target, pmemgo.ErrCorrupt)
		return false
	})
	if err != nil {
		return err
	}
	r.plain = plainTypes(p.Types, r.targets)
	r.setGeometry()
	r.index(p.Slabs)
	fa, _ := p.Dev.(device.FileAccess)
	return r.verify(workers, fa)
}

// index fills r's slab index from m.
func (r *ptrRules) index(m *SlabMap) {
	r.owner = make([]int32, r.high)
	n := 0
	for i, o := range m.owner {
		if o == int32(i) {
			n++
		}
	}
	r.heads = make([]slabHead, 0, n)
	for i := range r.owner {
		switch o := m.owner[i]; {
		case o < 0:
			r.owner[i] = slabFree
		case o == int32(i):
			r.owner[i] = int32(len(r.heads))
			sh := m.head(uint32(i))
			r.heads = append(r.heads, newSlabHead(r.mem, &r.h, uint32(i), &sh, r.types))
		default:
			r.owner[i] = r.owner[o]
		}
	}
}

// verify checks the slabs whose type has pointers, in parallel, and
// returns the first problem found. With fa, slot areas are read from the
// file a run of slabs at a time into a buffer of each worker (see
// runArea).
func (r *ptrRules) verify(workers int, fa device.FileAccess) error {
	var todo []int
	for k := range r.heads {
		if len(r.heads[k].td.Ptrs) > 0 {
			todo = append(todo, k)
		}
	}
	runs := swizzle.Runs(len(todo), func(i int) (uint64, uint64) {
		hd := &r.heads[todo[i]]
		return hd.data, uint64(hd.sh.Slots) * uint64(hd.sh.SlotSize)
	}, swizzle.RunBytes)
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		next   atomic.Int64
		once   sync.Once
		first  error
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	bad := func(s ptrSite, _ string, err error) bool {
		once.Do(func() { first = fmt.Errorf("%s at offset %d: %w", s.where(), s.off, err) })
		failed.Store(true)
		return false
	}
	for range min(workers, len(runs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for !failed.Load() {
				k := int(next.Add(1) - 1)
				if k >= len(runs) {
					return
				}
				run := &runs[k]
				win, winOff, err := r.runArea(run, fa, &buf)
				if err != nil {
					once.Do(func() { first = fmt.Errorf("slab %d: %w", r.heads[todo[run.First]].idx, err) })
					failed.Store(true)
					return
				}
				for _, h := range todo[run.First:run.End] {
					if !failed.Load() {
						r.slabPointers(&r.heads[h], bad, win, winOff)
					}
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// maxCopy is the largest run runArea copies; larger ones, arrays of many
// slabs, are read in place rather than held in a buffer of their size.
const maxCopy = 4 << 20

// runArea returns where slabPointers reads the words of the slot areas of
// run: a copy read from the file into buf when fa is set, so that the
// mapping's pages are not touched (under shadow paging a first touch costs
// far more than the copy, see device.FileAccess), else the mapping itself.
func (r *ptrRules) runArea(run *swizzle.Run, fa device.FileAccess, buf *[]byte) ([]byte, uint64, error) {
	if fa == nil || run.Len > maxCopy {
		return r.mem, 0, nil
	}
	if uint64(cap(*buf)) < run.Len {
		*buf = make([]byte, run.Len)
	}
	win := (*buf)[:run.Len]
	if err := fa.ReadAt(win, int64(run.Off)); err != nil {
		return nil, 0, err
	}
	return win, run.Off, nil
}
