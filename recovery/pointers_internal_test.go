package recovery

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pmemgo/pmemgo/internal/layout"
)

// TestSlotOfDivides compares the multiply-high division of slotOf with a
// division, for slot sizes of every kind and offsets at the edges of the
// fast path.
func TestSlotOfDivides(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []uint32{1, 2, 3, 7, 8, 24, 40, 64, 72, 1000, 4096, 65536, 1<<31 + 1, 1<<32 - 1}
	for range 20 {
		sizes = append(sizes, rng.Uint32N(1<<20)+1)
	}
	for _, size := range sizes {
		types := []layout.TypeDesc{{Name: "T", Size: 1}}
		hd := newSlabHead(make([]byte, 64<<10), &layout.Header{SlabSize: 64 << 10}, 0,
			&layout.SlabHeader{Type: 1, SlotSize: size, Slots: 1, DataOff: 128}, types)
		rels := []uint64{0, 1, uint64(size) - 1, uint64(size), uint64(size) + 1, 1<<32 - 1, 1 << 32, 1<<32 + 1, 1 << 40}
		for range 1000 {
			rels = append(rels, rng.Uint64N(1<<32), rng.Uint64N(1<<34))
		}
		for _, rel := range rels {
			if !assert.Equal(t, rel/uint64(size), hd.slotOf(rel), "%d / %d", rel, size) {
				break
			}
		}
	}
}
