package device

import "os"

// pageSize is the granularity of mappings and of msync.
var pageSize = os.Getpagesize()

// lineSpan returns the byte range [lo, hi) of the whole lines that hold
// [off, off+n) within a mapping of size bytes. ok is false when the range
// and the mapping share no byte. Bad ranges are clipped rather than
// rejected, because Flush has no way to report an error.
func lineSpan(off, n, size int) (lo, hi int, ok bool) {
	if off < 0 {
		n += off
		off = 0
	}
	if n <= 0 || off >= size {
		return 0, 0, false
	}
	end := off + min(n, size-off)
	return alignDown(off, LineSize), alignUp(end, LineSize), true
}

// alignDown rounds x down to a multiple of a, a power of two.
func alignDown(x, a int) int {
	return x &^ (a - 1)
}

// alignUp rounds x up to a multiple of a, a power of two.
func alignUp(x, a int) int {
	return (x + a - 1) &^ (a - 1)
}
