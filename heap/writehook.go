package heap

import (
	"sync"
	"sync/atomic"
)

// writeHooks are the functions registered with OnWrite.
type writeHooks struct {
	// fns is read on every change of the pool, without a lock; mu orders
	// the changes to it.
	fns atomic.Pointer[[]writeHook]
	mu  sync.Mutex
	id  int
}

type writeHook struct {
	id int
	fn func(off, n uint64)
}

// OnWrite registers fn to be told of each range [off, off+n) of the pool
// that the heap is about to change, before any byte of it changes: the
// lines a transaction logs, allocates or writes metadata to, its undo
// log entries, and the header words that an epoch change or growth
// writes. It is what snapshots copy lines on. A guardian's record of the
// chunks changed since the last replicated batch uses it, so that a
// chunk is recorded before its new content can reach the pool file,
// whatever the device. What Open and Close write (recovery, the open
// mark, the slab summary) and stores made outside any transaction are
// not reported: Device().Subscribe sees the former once written back.
//
// fn runs with the heap's writer lock held, on the goroutine changing the
// pool, and must not block or use the heap. The returned function
// unregisters it.
func (h *Heap) OnWrite(fn func(off, n uint64)) (cancel func()) {
	w := &h.writeHooks
	w.mu.Lock()
	defer w.mu.Unlock()
	w.id++
	id := w.id
	w.store(append(w.list(), writeHook{id, fn}))
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		var keep []writeHook
		for _, h := range w.list() {
			if h.id != id {
				keep = append(keep, h)
			}
		}
		w.store(keep)
	}
}

func (w *writeHooks) list() []writeHook {
	if p := w.fns.Load(); p != nil {
		return append([]writeHook(nil), *p...)
	}
	return nil
}

func (w *writeHooks) store(l []writeHook) {
	if len(l) == 0 {
		w.fns.Store(nil)
		return
	}
	w.fns.Store(&l)
}

// call tells the hooks of [off, off+n). It costs one atomic load when
// none is registered.
func (w *writeHooks) call(off, n uint64) {
	p := w.fns.Load()
	if p == nil || n == 0 {
		return
	}
	for _, h := range *p {
		h.fn(off, n)
	}
}
