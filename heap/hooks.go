package heap

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// commitHooks are functions run after every commit, and closeHooks
// those run when the heap closes.
type commitHooks struct {
	// n counts the commit hooks, so that a commit without any takes no
	// lock.
	n       atomic.Int32
	mu      sync.Mutex
	fns     map[int]func() error
	closing map[int]func()
	id      int
}

// OnCommit registers fn to run at the end of every Update that committed,
// once the commit is durable and before Update returns; a replication
// mirror waits there for its replicas. fn may call Snapshot: it runs at a
// commit boundary, with the writer lock held, so no commit can come between. An Update that changed nothing runs
// the hooks too, so an empty Update is a commit boundary. An error from fn is returned by
// Update, but the commit stands. The returned function unregisters fn.
func (h *Heap) OnCommit(fn func() error) (cancel func()) {
	c := &h.hooks
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fns == nil {
		c.fns = map[int]func() error{}
	}
	c.id++
	id := c.id
	c.fns[id] = fn
	c.n.Store(int32(len(c.fns)))
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.fns, id)
		c.n.Store(int32(len(c.fns)))
	}
}

func (h *Heap) runCommitHooks() error {
	c := &h.hooks
	if c.n.Load() == 0 {
		return nil
	}
	c.mu.Lock()
	if len(c.fns) == 0 {
		c.mu.Unlock()
		return nil
	}
	fns := make([]func() error, 0, len(c.fns))
	for _, fn := range c.fns {
		fns = append(fns, fn)
	}
	c.mu.Unlock()
	// The hooks run at a commit boundary with the writer lock held: a
	// hook may take a snapshot there (a mirror does, for a new replica).
	h.inHooks = true
	defer func() { h.inHooks = false }()
	var err error
	for _, fn := range fns {
		err = errors.Join(err, fn())
	}
	return err
}

// OnClose registers fn to run when Close is called, before Close waits for
// running transactions and unmaps the pool: whatever reads the pool's
// memory in goroutines of its own (a replication mirror does) stops there.
// fn runs without the heap's lock, so it may wait for goroutines that
// still run transactions. It runs once; the returned function unregisters
// it.
func (h *Heap) OnClose(fn func()) (cancel func()) {
	c := &h.hooks
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing == nil {
		c.closing = map[int]func(){}
	}
	c.id++
	id := c.id
	c.closing[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.closing, id)
	}
}

// runCloseHooks runs and forgets the close hooks, in the order they were
// registered.
func (h *Heap) runCloseHooks() {
	c := &h.hooks
	c.mu.Lock()
	ids := make([]int, 0, len(c.closing))
	for id := range c.closing {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	fns := make([]func(), 0, len(ids))
	for _, id := range ids {
		fns = append(fns, c.closing[id])
	}
	c.closing = nil
	c.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}
