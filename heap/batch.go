package heap

import (
	"errors"
	"fmt"
	"time"

	"github.com/pmemgo/pmemgo"
)

// BatchOptions tunes Batch; the zero value is what Open sets up.
type BatchOptions struct {
	// MaxSize is the most closures one batch runs; 0 means 1000.
	MaxSize int
	// MaxDelay is how long the first caller of a batch waits for others
	// before the batch runs. 0 runs it at once: callers that arrive while
	// a batch commits form the next batch, which is group commit without
	// a timer.
	MaxDelay time.Duration
}

// batchCall is one Batch caller waiting for its result.
type batchCall struct {
	fn  func(*Tx) error
	err chan error
}

// errRunAlone tells a caller whose closure failed in a batch to run it in
// a transaction of its own, to get its own error.
var errRunAlone = errors.New("pmemgo: run the closure alone")

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
	c := batchCall{fn: fn, err: make(chan error, 1)}
	h.batchMu.Lock()
	h.batchQueue = append(h.batchQueue, c)
	lead := !h.batchLeader
	h.batchLeader = true
	opts := h.batchOpts
	h.batchMu.Unlock()
	if lead {
		if opts.MaxDelay > 0 {
			time.Sleep(opts.MaxDelay)
		}
		h.leadBatches(opts)
	}
	err := <-c.err
	if errors.Is(err, errRunAlone) {
		return h.Update(fn)
	}
	if p, ok := err.(batchPanic); ok {
		panic(p.value)
	}
	return err
}

// leadBatches runs the queued closures, batch after batch, until the
// queue is empty.
func (h *Heap) leadBatches(opts BatchOptions) {
	max := opts.MaxSize
	if max <= 0 {
		max = 1000
	}
	for {
		h.batchMu.Lock()
		n := min(len(h.batchQueue), max)
		if n == 0 {
			h.batchLeader = false
			h.batchMu.Unlock()
			return
		}
		calls := append([]batchCall(nil), h.batchQueue[:n]...)
		h.batchQueue = append(h.batchQueue[:0], h.batchQueue[n:]...)
		h.batchMu.Unlock()
		h.runBatch(calls)
	}
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
