package heap

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/goroutine"
)

// trackedReaders is how many concurrent View transactions the lock names
// in fixed slots; more go to an overflow map.
const trackedReaders = 64

// txLock is the heap's reader-writer lock. It records which goroutines
// hold it, so that a transaction opened inside another one of the same
// goroutine (which would wait for itself forever) is refused with
// ErrNestedTx. Recording costs one store for a writer and one
// compare-and-swap for a reader; the holders are consulted only when the
// lock is already taken, or before a View (a View inside a View would wait
// for itself as soon as a writer queued between them).
type txLock struct {
	mu      sync.RWMutex
	writer  atomic.Uintptr
	readers [trackedReaders]atomic.Uintptr
	// inSlots counts the readers in the slots, so that a View with no
	// other reader running skips the scan.
	inSlots atomic.Int32
	// overflow holds readers past the fixed slots, counted in spilled so
	// that the common case does not take omu.
	omu      sync.Mutex
	overflow map[uintptr]int
	spilled  atomic.Int32
}

// holds reports whether goroutine g holds the lock, for reading or
// writing. It is exact for g itself: only g adds or removes g.
func (l *txLock) holds(g uintptr) bool {
	if g == 0 {
		return false
	}
	if l.writer.Load() == g {
		return true
	}
	if l.inSlots.Load() > 0 {
		for i := range l.readers {
			if l.readers[i].Load() == g {
				return true
			}
		}
	}
	if l.spilled.Load() == 0 {
		return false
	}
	l.omu.Lock()
	defer l.omu.Unlock()
	return l.overflow[g] > 0
}

// lock takes the lock for writing, waiting at most until ctx is done.
func (l *txLock) lock(ctx context.Context) error {
	g := goroutine.ID()
	if !l.mu.TryLock() {
		if l.holds(g) {
			return nested()
		}
		if err := wait(ctx, l.mu.TryLock, l.mu.Lock); err != nil {
			return err
		}
	}
	l.writer.Store(g)
	return nil
}

func (l *txLock) unlock() {
	l.writer.Store(0)
	l.mu.Unlock()
}

// rlock takes the lock for reading, waiting at most until ctx is done, and
// returns the reader slot to give back to runlock.
func (l *txLock) rlock(ctx context.Context) (int, error) {
	g := goroutine.ID()
	if l.holds(g) {
		return 0, nested()
	}
	if !l.mu.TryRLock() {
		if err := wait(ctx, l.mu.TryRLock, l.mu.RLock); err != nil {
			return 0, err
		}
	}
	return l.addReader(g), nil
}

func (l *txLock) runlock(slot int) {
	l.removeReader(slot)
	l.mu.RUnlock()
}

// addReader records g as a reader, in a slot picked from its identity so
// that concurrent readers rarely contend for one, or in the overflow map.
// It returns the slot, -1 for the overflow map, or -2 when goroutines
// cannot be identified on this architecture.
func (l *txLock) addReader(g uintptr) int {
	if g == 0 {
		return -2
	}
	start := int(g>>6) % trackedReaders
	for i := range trackedReaders {
		s := (start + i) % trackedReaders
		if l.readers[s].CompareAndSwap(0, g) {
			l.inSlots.Add(1)
			return s
		}
	}
	l.omu.Lock()
	defer l.omu.Unlock()
	if l.overflow == nil {
		l.overflow = map[uintptr]int{}
	}
	l.overflow[g]++
	l.spilled.Add(1)
	return -1
}

func (l *txLock) removeReader(slot int) {
	switch {
	case slot >= 0:
		l.readers[slot].Store(0)
		l.inSlots.Add(-1)
	case slot == -1:
		g := goroutine.ID()
		l.omu.Lock()
		defer l.omu.Unlock()
		if l.overflow[g]--; l.overflow[g] <= 0 {
			delete(l.overflow, g)
		}
		l.spilled.Add(-1)
	}
}

// heldByCaller reports whether the calling goroutine is inside a
// transaction of this heap.
func (l *txLock) heldByCaller() bool { return l.holds(goroutine.ID()) }

func nested() error {
	return fmt.Errorf("a transaction of this heap is already running in this goroutine: %w", pmemgo.ErrNestedTx)
}

// wait takes a contended lock. Without a deadline or cancellation it
// blocks in the mutex, which queues a writer ahead of later readers;
// otherwise it polls, backing off to a millisecond, until ctx is done.
func wait(ctx context.Context, try func() bool, block func()) error {
	if ctx.Done() == nil {
		block()
		return nil
	}
	backoff := 5 * time.Microsecond
	t := time.NewTimer(backoff)
	defer t.Stop()
	for {
		if try() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the heap's lock: %w", ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, time.Millisecond)
		t.Reset(backoff)
	}
}
