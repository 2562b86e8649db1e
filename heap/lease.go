package heap

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// leaseBase is the reference of lease deadlines: durations since it are
// read on the monotonic clock, which a change of the wall clock does not
// move.
var leaseBase = time.Now()

// Values of lease.until besides a deadline.
const (
	leaseNone   = 0
	leaseFenced = -1
)

// lease is the end of the primary's lease, after which Update commits
// nothing. until is nanoseconds since leaseBase, or leaseNone, or
// leaseFenced; a heap without a lease pays one atomic load per commit.
type lease struct {
	until atomic.Int64
}

// check returns ErrFenced, wrapped, once the lease has ended.
func (l *lease) check() error {
	until := l.until.Load()
	if until == leaseNone {
		return nil
	}
	if until == leaseFenced {
		return fmt.Errorf("lease lost: %w", pmemgo.ErrFenced)
	}
	if now := int64(time.Since(leaseBase)); now >= until {
		return fmt.Errorf("lease ran out %v ago: %w", time.Duration(now-until), pmemgo.ErrFenced)
	}
	return nil
}

// SetLeaseDeadline makes every Update (and Batch) fail with ErrFenced,
// committing nothing, once t has passed. It is meant for a primary whose
// role comes from a coordinator's lease (package ha): t is when the lease
// was last renewed plus its time to live, less a margin for clock drift
// and for a commit in flight, so that the pool stops changing before the
// coordinator can grant the role to another node. The check is made when
// Update starts and again before the commit writes anything; between
// renewals it costs a clock read. A deadline set after Fence lifts the
// fence.
func (h *Heap) SetLeaseDeadline(t time.Time) {
	until := int64(t.Sub(leaseBase))
	if until <= 0 {
		until = leaseFenced
	}
	h.lease.until.Store(until)
}

// Fence makes every later Update fail with ErrFenced: the lease was lost.
// A transaction already committing when Fence is called may still commit.
func (h *Heap) Fence() { h.lease.until.Store(leaseFenced) }

// ClearLease removes the lease check: Update commits as if the heap had
// never had a lease.
func (h *Heap) ClearLease() { h.lease.until.Store(leaseNone) }

// LeaseErr returns nil while the heap may commit, and an error wrapping
// ErrFenced once its lease has ended.
func (h *Heap) LeaseErr() error { return h.lease.check() }

// SetEpoch makes this open of the pool the incarnation numbered epoch, a
// fencing token that a coordinator granted (package ha), durably. The
// token must be above the pool's epoch: a token at or below it is stale,
// and SetEpoch returns ErrFenced, wrapped, changing nothing. NewEpoch is
// the way without a coordinator.
func (h *Heap) SetEpoch(epoch uint64) error {
	_, err := h.writeEpoch(func(cur uint64) (uint64, error) {
		if epoch <= cur {
			return 0, fmt.Errorf("epoch %d is not above the pool's epoch %d: %w", epoch, cur, pmemgo.ErrFenced)
		}
		return epoch, nil
	})
	return err
}

// writeEpoch stores the epoch that next returns for the current one.
func (h *Heap) writeEpoch(next func(cur uint64) (uint64, error)) (uint64, error) {
	if err := h.lock.lock(context.Background()); err != nil {
		return 0, err
	}
	defer h.lock.unlock()
	if h.closed {
		return 0, pmemgo.ErrClosed
	}
	if h.broken != nil {
		return 0, h.broken
	}
	if h.ro {
		return 0, pmemgo.ErrReadOnly
	}
	hdr := h.pool.Header
	epoch, err := next(hdr.Epoch)
	if err != nil {
		return 0, err
	}
	hdr.Epoch = epoch
	for i := range 2 {
		h.cow(uint64(layout.SlotOff(i)), layout.HeaderBytes)
	}
	h.cow(layout.OpenMarkOff, 8)
	if err := h.pool.WriteHeader(hdr); err != nil {
		return 0, err
	}
	return hdr.Epoch, nil
}
