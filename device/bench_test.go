package device_test

import (
	"encoding/binary"
	"testing"

	"github.com/pmemgo/pmemgo/device"
)

// BenchmarkFlushFence measures the smallest durable update: one 8-byte
// store, a flush of its line and a fence.
func BenchmarkFlushFence(b *testing.B) {
	for _, tc := range mappers() {
		b.Run(tc.name, func(b *testing.B) {
			f := newFile(b, fastDir(b), poolSize)
			d := mapFile(b, tc.m, f, device.MapRequest{})
			mem := d.Bytes()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				off := (i * device.LineSize) % poolSize
				binary.LittleEndian.PutUint64(mem[off:], uint64(i))
				d.Flush(off, 8)
				if err := d.Fence(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCommit measures the device's share of a small transaction:
// three fences of two flushed lines each, as an undo-logged commit does.
func BenchmarkCommit(b *testing.B) {
	for _, tc := range mappers() {
		b.Run(tc.name, func(b *testing.B) {
			d := mapFile(b, tc.m, newFile(b, fastDir(b), poolSize), device.MapRequest{})
			mem := d.Bytes()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				for step := range 3 {
					for _, off := range []int{step * 4096, step*4096 + 8192 + (i%8)*64} {
						binary.LittleEndian.PutUint64(mem[off:], uint64(i))
						d.Flush(off, 8)
					}
					if err := d.Fence(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}
