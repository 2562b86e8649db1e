package layout

import "github.com/cespare/xxhash/v2"

// Some metadata must change with a single 8-byte store, so that a crash
// never tears it, and yet a flipped bit in it must be noticed: the undo
// log's generation (a stale generation made current again would roll back a
// committed transaction) and a slab's swizzle generation. Such a word holds
// a 48-bit value and a 16-bit check of it.

const wordValueBits = 48

// MaxWordValue is the largest value a sealed word holds.
const MaxWordValue = 1<<wordValueBits - 1

func wordCheck(v uint64) uint64 {
	var b [8]byte
	le.PutUint64(b[:], v)
	return xxhash.Sum64(b[:]) & 0xffff
}

// SealWord returns the word holding v, which must be at most MaxWordValue.
func SealWord(v uint64) uint64 { return v<<16 | wordCheck(v) }

// OpenWord returns the value a sealed word holds, and false when its check
// fails.
func OpenWord(w uint64) (uint64, bool) {
	v := w >> 16
	return v, w&0xffff == wordCheck(v)
}
