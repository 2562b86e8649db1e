package mirror

import (
	"fmt"
	"sync"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// budget is the memory that the server's connections may hold for frames
// being received (wire.Budget): a frame that does not fit ends its
// connection rather than the server.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
}

// Acquire reserves n bytes or fails at once.
func (b *budget) Acquire(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+int64(n) > b.limit {
		return limitError("%d bytes more for frames in flight would exceed the server's %d (%d held)", n, b.limit, b.used)
	}
	b.used += int64(n)
	return nil
}

// Release gives back n bytes.
func (b *budget) Release(n int) {
	b.mu.Lock()
	b.used -= int64(n)
	b.mu.Unlock()
}

// checkHello returns an error for a hello that no primary sends, or whose
// pool the server does not take.
func (s *Server) checkHello(h wire.Hello, epoch uint64) error {
	switch {
	case epoch == 0:
		return protocolError("hello of epoch 0")
	case h.Size > uint64(s.opts.MaxPoolSize):
		return limitError("pool of %d bytes, the server takes pools of %d bytes at most", h.Size, s.opts.MaxPoolSize)
	}
	if err := validPoolSize(int64(h.Size)); err != nil {
		return fmt.Errorf("hello: %w: %w", err, ErrProtocol)
	}
	return nil
}

// idleState is what Status reports of a pool no session uses.
func (e *poolEntry) idleState() string {
	if e.p.damaged != nil {
		return "damaged"
	}
	return "idle"
}
