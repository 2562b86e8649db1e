package device

import (
	"encoding/binary"
	"os"
	"sync"
	"unsafe"
)

// pagemap is /proc/self/pagemap, opened once; nil when it cannot be.
var pagemap = sync.OnceValue(func() *os.File {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil
	}
	return f
})

// Bits of a pagemap entry.
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
	pmFile    = 1 << 61
)

// writtenPages reports, for each page of b, a private mapping of a file,
// whether it may have been written since it was mapped: whether it is
// backed by anonymous memory (copied on write) rather than by the file.
// Pages that were only read, or never touched, still show the file. It
// returns false when the kernel does not say.
func writtenPages(b []byte) ([]bool, bool) {
	f := pagemap()
	if f == nil || len(b) == 0 {
		return nil, false
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	n := (len(b) + pageSize - 1) / pageSize
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(addr/uintptr(pageSize))*8); err != nil {
		return nil, false
	}
	written := make([]bool, n)
	for i := range written {
		e := binary.LittleEndian.Uint64(buf[8*i:])
		written[i] = e&pmSwapped != 0 || e&pmPresent != 0 && e&pmFile == 0
	}
	return written, true
}
