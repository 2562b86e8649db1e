//go:build linux

package heap_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
	"github.com/pmemgo/pmemgo/recovery"
)

// largeNode is the small object of BenchmarkLargePool: 16 bytes, a
// pointer and a value.
type largeNode struct {
	Next *largeNode
	V    uint64
}

type largeRoot struct {
	Head *largeNode
	N    uint64
}

// BenchmarkLargePool creates a sparse 64 GiB pool, fills it with small
// objects (PMEMGO_LARGE_OBJECTS of them, 100M by default: about 1.6 GB of
// slabs) in transactions of a million, closes it, reopens it at the same
// base and at a new one, and checks it offline, reporting each step's
// time. It runs only when PMEMGO_LARGE=1: it needs minutes and gigabytes.
func BenchmarkLargePool(b *testing.B) {
	if os.Getenv("PMEMGO_LARGE") != "1" {
		b.Skip("set PMEMGO_LARGE=1 to build a 64 GiB pool")
	}
	total := 100_000_000
	if v := os.Getenv("PMEMGO_LARGE_OBJECTS"); v != "" {
		n, err := strconv.Atoi(v)
		check(b, err)
		total = n
	}
	const per = 1_000_000
	for b.Loop() {
		path := filepath.Join(benchutil.PoolDir(b), "large.pool")
		t0 := time.Now()
		h, err := heap.Open(path, &heap.Options{Size: 64 << 30})
		check(b, err)
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "create-ms")
		t0 = time.Now()
		for i := 0; i < total; i += per {
			check(b, h.Update(func(tx *heap.Tx) error {
				r, err := heap.Root[largeRoot](tx)
				if err != nil {
					return err
				}
				head := r.Head
				for j := range min(per, total-i) {
					n, err := heap.New[largeNode](tx)
					if err != nil {
						return err
					}
					n.Next, n.V = head, uint64(i+j)
					head = n
				}
				if err := heap.Set(tx, &r.Head, head); err != nil {
					return err
				}
				return heap.Set(tx, &r.N, r.N+uint64(min(per, total-i)))
			}))
		}
		fill := time.Since(t0)
		b.ReportMetric(float64(total)/fill.Seconds()/1e6, "fill-Mobj/s")
		check(b, h.Close())
		t0 = time.Now()
		h, err = heap.Open(path, nil)
		check(b, err)
		b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "reopen-ms")
		check(b, h.Close())
		t0 = time.Now()
		h, err = heap.Open(path, &heap.Options{ForceRelocate: true})
		check(b, err)
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "relocated-open-ms")
		check(b, h.Close())
		t0 = time.Now()
		var problems int
		_, err = recovery.CheckFileStats(path, func(recovery.Problem) bool { problems++; return true })
		check(b, err)
		if problems > 0 {
			b.Fatalf("check found %d problems", problems)
		}
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "check-ms")
		check(b, os.Remove(path))
	}
}
