package mirror

import (
	"math/bits"
	"sync"
)

// Frames are recycled: a busy async primary captures batches of many
// megabytes, and a new buffer for each costs its zeroing, about 5% of the
// CPU of a replicated commit stream. A frame goes back to the pool when
// the history has dropped its batch and no session is writing it (see
// batch.take and batch.done).

// frameClass returns the size class of a frame of n bytes: four classes
// per power of two from 4 KiB, which bounds the waste at a quarter.
func frameClass(n int) (class, size int) {
	if n <= 4096 {
		return 0, 4096
	}
	k := bits.Len(uint(n - 1)) // 2^(k-1) < n <= 2^k, k >= 13
	step := 1 << (k - 3)       // classes at 5/8, 6/8, 7/8 and 8/8 of 2^k
	size = (n + step - 1) / step * step
	return (k-13)*4 + size/step - 4, size
}

var framePools [4*64 + 1]sync.Pool

// getFrame returns an empty buffer with room for n bytes.
func getFrame(n int) []byte {
	class, size := frameClass(n)
	if v := framePools[class].Get(); v != nil {
		if b := *v.(*[]byte); cap(b) >= n {
			return b[:0]
		}
	}
	return make([]byte, 0, size)
}

// putFrame makes f's buffer available to getFrame. f must no longer be
// used.
func putFrame(f []byte) {
	if cap(f) < 4096 {
		return
	}
	class, size := frameClass(cap(f))
	if size != cap(f) {
		return // not one of ours
	}
	f = f[:0]
	framePools[class].Put(&f)
}
