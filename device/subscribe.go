package device

import (
	"sync"
	"sync/atomic"
)

// subscription gives each Subscribe call an identity of its own, so that
// cancel removes exactly that registration even if the same Subscriber was
// registered twice or is of a type that cannot be compared.
type subscription struct {
	s Subscriber
}

// subscribers is the set of subscribers of one device. The set is an
// immutable slice swapped atomically: flushes and fences read it without a
// lock, and a subscriber may cancel itself from inside a callback because
// the callback loop holds nothing.
type subscribers struct {
	mu   sync.Mutex // serializes changes to list
	list atomic.Pointer[[]*subscription]
}

// add registers s and returns the function that cancels it.
func (ss *subscribers) add(s Subscriber) (cancel func()) {
	if s == nil {
		return func() {}
	}
	sub := &subscription{s: s}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	old := ss.load()
	next := make([]*subscription, len(old), len(old)+1)
	copy(next, old)
	next = append(next, sub)
	ss.list.Store(&next)
	return func() { ss.remove(sub) }
}

// remove unregisters sub. Removing it twice is harmless.
func (ss *subscribers) remove(sub *subscription) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	old := ss.load()
	next := make([]*subscription, 0, len(old))
	for _, e := range old {
		if e != sub {
			next = append(next, e)
		}
	}
	ss.list.Store(&next)
}

// load returns the current subscribers. The slice must not be modified.
func (ss *subscribers) load() []*subscription {
	if p := ss.list.Load(); p != nil {
		return *p
	}
	return nil
}

// writeBack tells every subscriber that [off, off+n) was flushed.
func (ss *subscribers) writeBack(off, n int) {
	for _, e := range ss.load() {
		e.s.WriteBack(off, n)
	}
}

// fence tells every subscriber that everything flushed is durable.
func (ss *subscribers) fence() {
	for _, e := range ss.load() {
		e.s.Fence()
	}
}

// grown tells every subscriber, each a GrowthFollower (checkGrow saw to
// it), that the pool is now size bytes long.
func (ss *subscribers) grown(size int) {
	for _, e := range ss.load() {
		if g, ok := e.s.(GrowthFollower); ok {
			g.Grown(size)
		}
	}
}

// unfollowing counts the subscribers that do not follow growth.
func (ss *subscribers) unfollowing() int {
	n := 0
	for _, e := range ss.load() {
		if _, ok := e.s.(GrowthFollower); !ok {
			n++
		}
	}
	return n
}
