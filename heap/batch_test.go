package heap_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
)

// batchRoot holds one counter per writer goroutine of the Batch tests.
type batchRoot struct {
	Counters [64]uint64
	Sums     [64]uint64
}

// TestBatch has 64 goroutines commit through Batch, each keeping its own
// invariant (Sums[i] is the sum of 1..Counters[i]); one closure in 50
// fails on purpose. Every closure that succeeded must be durable after a
// reopen, and no failed one may have left anything.
func TestBatch(t *testing.T) {
	const writers, each = 64, 60
	path := filepath.Join(fastTempDir(t), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { _, err := heap.Root[batchRoot](tx); return err }))
	var ok [writers]uint64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				fail := (w*each+i)%50 == 7
				err := h.Batch(func(tx *heap.Tx) error {
					r, err := heap.Root[batchRoot](tx)
					if err != nil {
						return err
					}
					if err := heap.AddAll(tx, &r.Counters[w], &r.Sums[w]); err != nil {
						return err
					}
					r.Counters[w]++
					r.Sums[w] += r.Counters[w]
					if fail {
						return errAbort
					}
					return nil
				})
				if fail {
					assert.ErrorIs(t, err, errAbort)
					continue
				}
				if assert.NoError(t, err) {
					ok[w]++
				}
			}
		}()
	}
	wg.Wait()
	st := h.Stats().Tx
	require.NoError(t, h.Close())
	t.Logf("%d Batch calls in %d commits (%d rolled back)", writers*each, st.Commits, st.Rollbacks)
	assert.Less(t, st.Commits, uint64(writers*each), "concurrent callers must share commits")

	h, err = heap.Open(path, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[batchRoot](tx)
		if err != nil {
			return err
		}
		for w := range writers {
			n := r.Counters[w]
			assert.Equal(t, ok[w], n, "writer %d", w)
			assert.Equal(t, n*(n+1)/2, r.Sums[w], "writer %d's invariant", w)
		}
		return nil
	}))
}

// TestBatchRunsWhenFull: with a long MaxDelay, a batch runs as soon as
// MaxSize callers are in it, in one commit, rather than after the delay.
func TestBatchRunsWhenFull(t *testing.T) {
	const writers = 8
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.Update(func(tx *heap.Tx) error { _, err := heap.Root[batchRoot](tx); return err }))
	h.SetBatchOptions(heap.BatchOptions{MaxSize: writers, MaxDelay: time.Hour})
	before := h.Stats().Tx.Commits
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, h.Batch(func(tx *heap.Tx) error {
				r, err := heap.Root[batchRoot](tx)
				if err != nil {
					return err
				}
				return heap.Set(tx, &r.Counters[w], r.Counters[w]+1)
			}))
		}()
	}
	wg.Wait()
	assert.Equal(t, before+1, h.Stats().Tx.Commits, "one commit for the full batch")
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[batchRoot](tx)
		require.NoError(t, err)
		for w := range writers {
			assert.Equal(t, uint64(1), r.Counters[w])
		}
		return nil
	}))
}

func TestBatchErrors(t *testing.T) {
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	t.Run("nested", func(t *testing.T) {
		err := h.Update(func(*heap.Tx) error { return h.Batch(func(*heap.Tx) error { return nil }) })
		require.ErrorIs(t, err, pmemgo.ErrNestedTx)
	})
	t.Run("bad pointer found at commit", func(t *testing.T) {
		// The commit, not the closure, finds the foreign pointer: the
		// caller still gets its own error, and the others commit.
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = h.Batch(func(tx *heap.Tx) error {
					n, err := heap.New[Node](tx)
					if err == nil && i == 3 {
						n.Next = goHeapNode
					}
					return err
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if i == 3 {
				assert.ErrorIs(t, err, pmemgo.ErrForeignPointer)
			} else {
				assert.NoError(t, err, "caller %d", i)
			}
		}
	})
	t.Run("panic", func(t *testing.T) {
		got := func() (r any) {
			defer func() { r = recover() }()
			return h.Batch(func(*heap.Tx) error { panic("boom") })
		}()
		assert.Equal(t, "boom", got)
		require.NoError(t, h.Batch(func(*heap.Tx) error { return nil }), "the heap is still usable")
	})
	t.Run("options", func(t *testing.T) {
		h.SetBatchOptions(heap.BatchOptions{MaxSize: 2})
		defer h.SetBatchOptions(heap.BatchOptions{})
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() { defer wg.Done(); assert.NoError(t, h.Batch(func(*heap.Tx) error { return nil })) }()
		}
		wg.Wait()
	})
}

// BenchmarkBatch measures closures committed per second by 1, 8 and 64
// goroutines, each closure changing one field, through Batch and through
// Update, side by side:
//
//	go test -run XXX -bench Batch ./heap/
func BenchmarkBatch(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		for _, mode := range []string{"batch", "update"} {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, mode), func(b *testing.B) {
				h, err := heap.Open(filepath.Join(benchutil.PoolDir(b), "batch.pool"), &heap.Options{Size: 4 << 20})
				check(b, err)
				defer h.Close()
				check(b, h.Update(func(tx *heap.Tx) error { _, err := heap.Root[batchRoot](tx); return err }))
				run := h.Update
				if mode == "batch" {
					run = h.Batch
				}
				before := h.Stats().Tx.Commits
				var wg sync.WaitGroup
				per := b.N/writers + 1
				b.ResetTimer()
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							err := run(func(tx *heap.Tx) error {
								r, err := heap.Root[batchRoot](tx)
								if err != nil {
									return err
								}
								return heap.Set(tx, &r.Counters[w], r.Counters[w]+1)
							})
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				calls := float64(per * writers)
				b.ReportMetric(calls/b.Elapsed().Seconds(), "closures/s")
				b.ReportMetric(calls/float64(h.Stats().Tx.Commits-before), "closures/commit")
			})
		}
	}
}
