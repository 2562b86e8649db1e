package heap

import (
	"errors"
	"sync"
)

// commitHooks are functions run after every commit.
type commitHooks struct {
	mu  sync.Mutex
	fns map[int]func() error
	id  int
}

// OnCommit registers fn to run at the end of every Update that committed,
// once the commit is durable and before Update returns; a replication
// mirror waits there for its replicas. An Update that changed nothing runs
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
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.fns, id)
	}
}

func (h *Heap) runCommitHooks() error {
	c := &h.hooks
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
	var err error
	for _, fn := range fns {
		err = errors.Join(err, fn())
	}
	return err
}
