package bench_test

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
)

// counters is the root of BenchmarkBatch's pool: one counter a writer.
type counters struct {
	C [64]int64
}

// BenchmarkBatch runs 1, 8 and 64 writers, each adding one to its own
// counter in a closure, through pmemgo's heap.Batch (on the default
// device, msync, and on device.Buffered, one fdatasync a commit) and
// through bbolt's DB.Batch (a bucket, one key a writer), every closure
// durable when its call returns. Both batch as bbolt does by default
// (MaxBatchDelay 10 ms) with the batch size set to the number of writers,
// so that a batch commits as soon as every writer is in it. Reported:
// closures a second, and for pmemgo commits per closure.
func BenchmarkBatch(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		for _, engine := range []string{"pmemgo", "pmemgo-buffered", "bbolt"} {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, engine), func(b *testing.B) {
				dir := benchutil.PoolDir(b)
				var call func(w int) error
				var commits func() uint64
				switch engine {
				case "pmemgo", "pmemgo-buffered":
					opts := &heap.Options{Size: 8 << 20}
					if engine == "pmemgo-buffered" {
						opts.Device = device.Buffered{}
					}
					h, err := heap.Open(filepath.Join(dir, "batch.pool"), opts)
					if err != nil {
						b.Fatal(err)
					}
					defer h.Close()
					h.SetBatchOptions(heap.BatchOptions{MaxSize: writers, MaxDelay: 10 * time.Millisecond})
					if err := h.Update(func(tx *heap.Tx) error { _, err := heap.Root[counters](tx); return err }); err != nil {
						b.Fatal(err)
					}
					call = func(w int) error {
						return h.Batch(func(tx *heap.Tx) error {
							r, err := heap.Root[counters](tx)
							if err != nil {
								return err
							}
							return heap.Set(tx, &r.C[w], r.C[w]+1)
						})
					}
					commits = func() uint64 { return h.Stats().Tx.Commits }
				case "bbolt":
					db, err := bolt.Open(filepath.Join(dir, "batch.db"), 0o600, nil)
					if err != nil {
						b.Fatal(err)
					}
					defer db.Close()
					db.MaxBatchSize = writers
					name := []byte("counters")
					if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(name); return err }); err != nil {
						b.Fatal(err)
					}
					call = func(w int) error {
						return db.Batch(func(tx *bolt.Tx) error {
							bk := tx.Bucket(name)
							k := []byte{byte(w)}
							v := make([]byte, 8)
							if old := bk.Get(k); old != nil {
								binary.LittleEndian.PutUint64(v, binary.LittleEndian.Uint64(old)+1)
							}
							return bk.Put(k, v)
						})
					}
				}
				per := b.N/writers + 1
				var c0 uint64
				if commits != nil {
					c0 = commits()
				}
				var wg sync.WaitGroup
				b.ResetTimer()
				t0 := time.Now()
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							if err := call(w); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				took := time.Since(t0)
				b.StopTimer()
				n := float64(writers * per)
				b.ReportMetric(n/took.Seconds(), "closures/s")
				if commits != nil {
					b.ReportMetric(float64(commits()-c0)/n, "commits/closure")
				}
			})
		}
	}
}
