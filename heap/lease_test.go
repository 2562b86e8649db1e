package heap_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

type leaseCounter struct{ N int }

// bump adds one to the root counter.
func bump(h *heap.Heap) error {
	return h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[leaseCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, c.N+1)
	})
}

func counter(t *testing.T, h *heap.Heap) int {
	t.Helper()
	var n int
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		c, err := heap.Root[leaseCounter](tx)
		n = c.N
		return err
	}))
	return n
}

// TestLeaseFencesUpdate checks that a heap whose lease ended commits
// nothing, whichever way it ended, and commits again once renewed.
func TestLeaseFencesUpdate(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "lease.pool")
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, bump(h))

	steps := []struct {
		name   string
		set    func()
		fenced bool
	}{
		{"deadline ahead", func() { h.SetLeaseDeadline(time.Now().Add(time.Hour)) }, false},
		{"deadline passed", func() { h.SetLeaseDeadline(time.Now().Add(-time.Millisecond)) }, true},
		{"renewed", func() { h.SetLeaseDeadline(time.Now().Add(time.Hour)) }, false},
		{"fenced", h.Fence, true},
		{"cleared", h.ClearLease, false},
	}
	want := counter(t, h)
	for _, s := range steps {
		s.set()
		err := bump(h)
		if s.fenced {
			require.ErrorIs(t, err, pmemgo.ErrFenced, s.name)
			require.ErrorIs(t, h.LeaseErr(), pmemgo.ErrFenced, s.name)
			require.ErrorIs(t, h.Batch(func(*heap.Tx) error { return nil }), pmemgo.ErrFenced, s.name)
		} else {
			require.NoError(t, err, s.name)
			require.NoError(t, h.LeaseErr(), s.name)
			want++
		}
		assert.Equal(t, want, counter(t, h), s.name)
	}
	require.NoError(t, h.Close())
	checkPool(t, path)
}

// TestLeaseEndsDuringTransaction checks the second check, before the
// commit writes: a lease that ends while the closure runs rolls the
// transaction back.
func TestLeaseEndsDuringTransaction(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "lease.pool")
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, bump(h))
	h.SetLeaseDeadline(time.Now().Add(time.Hour))
	err = h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[leaseCounter](tx)
		if err != nil {
			return err
		}
		if err := heap.Set(tx, &c.N, 100); err != nil {
			return err
		}
		h.SetLeaseDeadline(time.Now())
		return nil
	})
	require.ErrorIs(t, err, pmemgo.ErrFenced)
	assert.Equal(t, 1, counter(t, h))
	require.NoError(t, h.Close())
	checkPool(t, path)
}

// TestSetEpoch checks that a fencing token becomes the pool's epoch only
// when it is above the pool's, and durably.
func TestSetEpoch(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "epoch.pool")
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, h.SetEpoch(7))
	assert.Equal(t, uint64(7), h.Epoch())
	for _, stale := range []uint64{7, 3, 0} {
		err := h.SetEpoch(stale)
		require.ErrorIs(t, err, pmemgo.ErrFenced)
		assert.Contains(t, err.Error(), "not above the pool's epoch 7")
	}
	e, err := h.NewEpoch()
	require.NoError(t, err)
	assert.Equal(t, uint64(8), e)
	require.NoError(t, h.Close())
	h, err = heap.Open(path, nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(8), h.Epoch())
	require.NoError(t, h.Close())
	checkPool(t, path)
}

// BenchmarkLeaseErr measures the check that Update makes twice per
// commit: one atomic load without a lease, and a monotonic clock read
// with one.
func BenchmarkLeaseErr(b *testing.B) {
	for _, lease := range []bool{false, true} {
		b.Run(map[bool]string{false: "none", true: "deadline"}[lease], func(b *testing.B) {
			h, err := heap.Open(filepath.Join(fastTempDir(b), "lease.pool"), &heap.Options{Size: 8 << 20})
			require.NoError(b, err)
			defer h.Close()
			if lease {
				h.SetLeaseDeadline(time.Now().Add(time.Hour))
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := h.LeaseErr(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
