package heap_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
)

// The benchmarks of this file measure what growth costs:
//
//	go test -run XXX -bench 'Grow' -benchtime=20x ./heap/
//
// BenchmarkGrowDoubling times Heap.Grow from size to twice size: extending
// the file (fallocate, which on tmpfs allocates and zeroes the pages),
// syncing it, mapping the new part and writing the header.
// BenchmarkGrowFirstAlloc times the Update of one allocation that needs a
// new slab: in a pool with room (baseline), in a full pool right after a
// growth (the new slab's pages are touched for the first time), and in a
// full pool, where the allocation grows the pool itself.

// BenchmarkGrowDoubling reports ns per doubling and the MB/s of pool added.
func BenchmarkGrowDoubling(b *testing.B) {
	for _, size := range []int64{4 << 20, 64 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("from=%dMiB", size>>20), func(b *testing.B) {
			dir := benchutil.PoolDir(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				path := filepath.Join(dir, fmt.Sprintf("grow-%d.pool", i))
				h, err := heap.Open(path, &heap.Options{Size: size, MaxSize: 2 * size})
				check(b, err)
				b.StartTimer()
				check(b, h.Grow(2*size))
				b.StopTimer()
				check(b, h.Close())
				check(b, os.Remove(path))
				b.StartTimer()
			}
			b.ReportMetric(benchutil.MB(size)*float64(b.N)/b.Elapsed().Seconds(), "MB/s")
		})
	}
}

// fullPoolBytes is the slice each allocation of BenchmarkGrowFirstAlloc
// makes: one per 64 KiB slab, so that every allocation needs a new slab.
const fullPoolBytes = 40 << 10

// fillToTheBrim allocates slices of fullPoolBytes in a pool that may not
// grow until no slab is left.
func fillToTheBrim(b *testing.B, path string, size int64) {
	h, err := heap.Open(path, &heap.Options{Size: size, MaxSize: size})
	check(b, err)
	for {
		err := h.Update(func(tx *heap.Tx) error {
			_, err := heap.MakeSlice[byte](tx, fullPoolBytes, fullPoolBytes)
			return err
		})
		if errors.Is(err, pmemgo.ErrNoSpace) {
			break
		}
		check(b, err)
	}
	check(b, h.Close())
}

func BenchmarkGrowFirstAlloc(b *testing.B) {
	const size = 4 << 20
	dir := benchutil.PoolDir(b)
	full := filepath.Join(dir, "full.pool")
	fillToTheBrim(b, full, size)
	image, err := os.ReadFile(full)
	check(b, err)
	alloc := func(tx *heap.Tx) error {
		_, err := heap.MakeSlice[byte](tx, fullPoolBytes, fullPoolBytes)
		return err
	}
	for _, tc := range []struct {
		name string
		// open opens the pool the timed allocation runs in.
		open func(path string) (*heap.Heap, error)
		grow bool
	}{
		// A pool of twice the size that never grew, with the slice type
		// registered by a first allocation.
		{name: "with-room", open: func(path string) (*heap.Heap, error) {
			h, err := heap.Open(path, &heap.Options{Size: 2 * size})
			if err == nil {
				err = h.Update(alloc)
			}
			return h, err
		}},
		{name: "after-growth", open: func(path string) (*heap.Heap, error) {
			h, err := openFullImage(path, image, 2*size)
			if err == nil {
				err = h.Grow(2 * size)
			}
			return h, err
		}},
		{name: "growing", grow: true, open: func(path string) (*heap.Heap, error) {
			return openFullImage(path, image, 2*size)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				path := filepath.Join(dir, "p.pool")
				h, err := tc.open(path)
				check(b, err)
				before := h.Stats().Size
				b.StartTimer()
				check(b, h.Update(alloc))
				b.StopTimer()
				if grew := h.Stats().Size != before; grew != tc.grow {
					b.Fatalf("the allocation grew the pool: %v, want %v", grew, tc.grow)
				}
				check(b, h.Close())
				check(b, os.Remove(path))
				b.StartTimer()
			}
		})
	}
}

// openFullImage writes image to path and opens it with a maximum size of max.
func openFullImage(path string, image []byte, max int64) (*heap.Heap, error) {
	if err := os.WriteFile(path, image, 0o600); err != nil {
		return nil, err
	}
	return heap.Open(path, &heap.Options{MaxSize: max})
}
