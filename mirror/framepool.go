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

// minFrame is the smallest frame class: a sync commit of a few lines
// makes a frame of a few hundred bytes, and the history keeps every one
// until it reaches Options.RetainBytes, so a 4 KiB buffer each would hold
// ten times the memory the history counts, and touch a fresh page of it
// (a page fault, tens of microseconds in a virtual machine) per commit.
const minFrame = 512

// frameClass returns the size class of a frame of n bytes: powers of two
// from 512 bytes to 4 KiB, then four classes per power of two, which
// bounds the waste at a quarter.
func frameClass(n int) (class, size int) {
	if n <= 4096 {
		size = minFrame
		for size < n {
			size *= 2
		}
		return bits.Len(uint(size/minFrame)) - 1, size
	}
	k := bits.Len(uint(n - 1)) // 2^(k-1) < n <= 2^k, k >= 13
	step := 1 << (k - 3)       // classes at 5/8, 6/8, 7/8 and 8/8 of 2^k
	size = (n + step - 1) / step * step
	return 4 + (k-13)*4 + size/step - 4, size
}

var framePools [4 + 4*64]sync.Pool

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
	if cap(f) < minFrame {
		return
	}
	class, size := frameClass(cap(f))
	if size != cap(f) {
		return // not one of ours
	}
	f = f[:0]
	framePools[class].Put(&f)
}
