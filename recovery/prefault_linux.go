package recovery

import (
	"sync"

	"golang.org/x/sys/unix"
)

// prefaultChunk is how much of the mapping one populate call covers, so
// that the workers share a large range evenly.
const prefaultChunk = 64 << 20

// prefault maps in the pages of b in bulk, on up to workers goroutines,
// for reading or, with write, for writing: a write fault on a page mapped
// for reading is a second fault. On the machines we measured a page fault
// cost about 27 us, whether taken by a load or asked for page by page,
// while populating a whole range cost about 0.6 us a page. It is only a
// hint: a kernel without MADV_POPULATE_READ and _WRITE (before Linux 5.14)
// returns EINVAL and the pages are faulted in as they are used. Under
// shadow paging (a nested virtual machine) the first touch of each page
// still costs an exit to the hypervisor; devices that can be read and
// written through the file avoid the mapping instead (see
// device.FileAccess).
func prefault(b []byte, workers int, write bool) {
	advice := unix.MADV_POPULATE_READ
	if write {
		advice = unix.MADV_POPULATE_WRITE
	}
	n := (len(b) + prefaultChunk - 1) / prefaultChunk
	if n <= 1 || workers <= 1 {
		if len(b) > 0 {
			_ = unix.Madvise(b, advice)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := w; c < n; c += workers {
				_ = unix.Madvise(b[c*prefaultChunk:min((c+1)*prefaultChunk, len(b))], advice)
			}
		}()
	}
	wg.Wait()
}
