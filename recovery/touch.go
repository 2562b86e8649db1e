package recovery

import (
	"sync"
	"sync/atomic"

	"github.com/pmemgo/pmemgo/internal/layout"
)

// touchSink keeps the loads of touchHeaders from being optimised away.
var touchSink atomic.Uint64

// touchHeaders loads the first byte of every slab below high, each worker
// a contiguous share of them, so that the walk over the slab headers, which
// goes in order because each header says how many slabs its extent covers,
// finds their pages in the page tables. Under shadow paging the first load
// from each page of a new mapping costs 5-10 us even after MADV_POPULATE
// (7 us a slab, 110 ms for the 16k slabs of 1 GiB, on the machine we
// measured); spread over the cores, those faults overlap. Workers take
// contiguous shares so that they do not fault on the same page table.
func touchHeaders(mem []byte, h *layout.Header, high uint32, workers int) {
	if workers <= 1 || high < 2 {
		return
	}
	workers = min(workers, int(high))
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := uint32(uint64(high)*uint64(w)/uint64(workers)), uint32(uint64(high)*uint64(w+1)/uint64(workers))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sum uint64
			for i := lo; i < hi; i++ {
				sum += uint64(mem[h.SlabOffset(i)])
			}
			touchSink.Add(sum)
		}()
	}
	wg.Wait()
}
