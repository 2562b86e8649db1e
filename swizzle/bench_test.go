package swizzle_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pmemgo/pmemgo/swizzle"
)

// BenchmarkTableRelocate measures the per-pointer cost of the relocation
// table alone, with 1 old range (a plain relocation) and 4 (relocated
// again while swizzles were interrupted), the pointers spread at random
// over the old ranges.
func BenchmarkTableRelocate(b *testing.B) {
	const (
		poolSize = 1 << 30
		pointers = 1 << 14 // 128 KiB of pointers: stays in L2
	)
	for _, olds := range []int{1, 4} {
		b.Run(fmt.Sprintf("old=%d", olds), func(b *testing.B) {
			t := swizzle.Table{Target: 0x7f00_0000_0000, Size: poolSize}
			for i := range olds {
				t.Old = append(t.Old, 0x1000_0000_0000+uint64(i)*0x100_0000_0000)
			}
			rng := rand.New(rand.NewPCG(1, uint64(olds)))
			ptrs := make([]uint64, pointers)
			for i := range ptrs {
				ptrs[i] = t.Old[rng.IntN(olds)] + rng.Uint64N(poolSize)&^7
			}
			var sum uint64
			b.ReportAllocs()
			for b.Loop() {
				for _, p := range ptrs {
					nv, ok := t.Relocate(p)
					if !ok {
						b.Fatalf("pointer %#x not relocated by %s", p, t.String())
					}
					sum += nv
				}
			}
			if sum == 0 {
				b.Fatal("no pointer relocated")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/pointers, "ns/pointer")
			b.ReportMetric(float64(b.N)*pointers/b.Elapsed().Seconds(), "pointers/s")
		})
	}
}
