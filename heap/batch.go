package heap

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pmemgo/pmemgo"
)

// BatchOptions tunes Batch; the zero value is what Open sets up.
type BatchOptions struct {
	// MaxSize is the most closures one batch runs; 0 means 1000.
	MaxSize int
	// MaxDelay is how long the first caller of a batch waits for others
	// before the batch runs, unless MaxSize callers are in it sooner (as
	// bbolt's MaxBatchDelay and MaxBatchSize). 0 runs it at once: callers
	// that arrive while a batch commits form the next batch, which is
	// group commit without a timer.
	MaxDelay time.Duration
}

// batchCall is one Batch caller waiting for its result.
type batchCall struct {
	fn  func(*Tx) error
	err chan error
}

// resultChans holds the result channels of finished Batch calls: a
// channel made for each call was a tenth of a small closure's cost with
// 64 writers.
var resultChans = sync.Pool{New: func() any { return make(chan error, 1) }}

// errRunAlone tells a caller whose closure failed in a batch to run it in
// a transaction of its own, to get its own error.
var errRunAlone = errors.New("pmemgo: run the closure alone")

// maxSize is MaxSize, or its default.
func (o BatchOptions) maxSize() int {
	if o.MaxSize <= 0 {
		return 1000
	}
	return o.MaxSize
}

// SetBatchOptions changes how Batch groups callers.
func (h *Heap) SetBatchOptions(o BatchOptions) {
	h.batchMu.Lock()
	defer h.batchMu.Unlock()
	h.batchOpts = o
}

// Batch runs fn in a transaction shared with other goroutines calling
// Batch at the same time: their closures run one after another in one
// Update, and one commit (one pair of fences) makes them all durable. When
// Batch returns nil, fn's changes are durable, as with Update.
//
// A closure that returns an error makes the shared transaction roll back;
// the others are then run again without it, and it runs alone in an
// Update of its own, whose error Batch returns. So fn may run more than
// once and must be idempotent apart from its changes to the pool (which a
// rollback undoes), as with bbolt's Batch. A panic in fn fails only its
// own caller's Batch with that panic.
func (h *Heap) Batch(fn func(*Tx) error) error {
	if h.lock.heldByCaller() {
		return nested()
	}
	c := batchCall{fn: fn, err: resultChans.Get().(chan error)}
	// The channel goes back for another caller once its one result has
	// been received: every send to it (errLead, then the result) is to a
	// caller still waiting, so it is empty then.
	defer resultChans.Put(c.err)
	h.batchMu.Lock()
	h.batchQueue = append(h.batchQueue, c)
	lead := !h.batchLeader
	h.batchLeader = true
	opts := h.batchOpts
	switch {
	case lead:
		h.waitForMore(opts)
	case h.batchFull != nil && len(h.batchQueue) >= opts.maxSize():
		close(h.batchFull)
		h.batchFull = nil
	}
	h.batchMu.Unlock()
	if lead {
		h.leadBatch(opts)
	}
	for {
		err := <-c.err
		if err == errLead {
			h.leadBatch(opts)
			continue
		}
		if errors.Is(err, errRunAlone) {
			return h.Update(fn)
		}
		if p, ok := err.(batchPanic); ok {
			panic(p.value)
		}
		return err
	}
}

// errLead tells the first caller in the queue that it leads the next
// batch.
var errLead = errors.New("pmemgo: lead the next batch")

// waitForMore makes the next leader wait, MaxDelay at most, until the
// queue holds MaxSize callers; h.batchMu is held.
func (h *Heap) waitForMore(opts BatchOptions) {
	if opts.MaxDelay > 0 && len(h.batchQueue) < opts.maxSize() {
		h.batchFull = make(chan struct{})
	}
}

// leadBatch runs one batch: the leader, first in the queue, and the
// callers after it, up to MaxSize, once the queue is full or MaxDelay has
// passed. Then it hands the lead to the first caller still queued, so
// that the leader returns to its own caller at once, free to queue again
// (a leader that ran batch after batch kept a writer out of the queue, and
// a queue that waits for MaxSize callers then waited out MaxDelay).
func (h *Heap) leadBatch(opts BatchOptions) {
	h.batchMu.Lock()
	full := h.batchFull
	h.batchMu.Unlock()
	if full != nil {
		t := time.NewTimer(opts.MaxDelay)
		select {
		case <-full:
		case <-t.C:
		}
		t.Stop()
	}
	h.batchMu.Lock()
	if h.batchFull == full {
		h.batchFull = nil
	}
	n := min(len(h.batchQueue), opts.maxSize())
	calls := append([]batchCall(nil), h.batchQueue[:n]...)
	h.batchQueue = append(h.batchQueue[:0], h.batchQueue[n:]...)
	h.batchMu.Unlock()
	h.runBatch(calls)
	h.batchMu.Lock()
	defer h.batchMu.Unlock()
	if len(h.batchQueue) == 0 {
		h.batchLeader = false
		return
	}
	h.waitForMore(opts)
	// Its channel is empty: a queued caller has had no result yet.
	h.batchQueue[0].err <- errLead
}

// batchPanic carries a closure's panic to its caller.
type batchPanic struct{ value any }

func (p batchPanic) Error() string { return fmt.Sprintf("panic in a Batch closure: %v", p.value) }

// runBatch runs calls in one Update. A closure that fails is taken out
// and told to run alone; the rest run again.
func (h *Heap) runBatch(calls []batchCall) {
	for len(calls) > 0 {
		failed := -1
		var failure error
		err := h.Update(func(tx *Tx) error {
			for i, c := range calls {
				if err := callSafely(c.fn, tx); err != nil {
					failed, failure = i, err
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			// A commit that failed (a closure's bad pointer is found only
			// then) cannot be pinned on one closure: each runs alone.
			if err != nil && len(calls) > 1 && !errors.Is(err, pmemgo.ErrClosed) && !errors.Is(err, pmemgo.ErrFenced) && h.broken == nil {
				err = errRunAlone
			}
			for _, c := range calls {
				c.err <- err
			}
			return
		}
		c := calls[failed]
		calls = append(calls[:failed:failed], calls[failed+1:]...)
		if _, ok := failure.(batchPanic); ok || errors.Is(err, pmemgo.ErrClosed) {
			c.err <- failure
		} else {
			c.err <- errRunAlone
		}
	}
}

// callSafely runs fn, turning a panic into an error for its caller.
func callSafely(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = batchPanic{r}
		}
	}()
	return fn(tx)
}
