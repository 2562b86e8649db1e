package ha

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// ErrNoLeader is returned by Coordinator.Leader when no node holds the
// primary role of the pool.
var ErrNoLeader = errors.New("pmemgo/ha: no primary")

// Coordinator decides which node is the primary of a pool: an election
// with a lease, whose every grant carries a fencing token larger than any
// granted before for the pool. ha makes no decision of its own: LeaseFile
// coordinates the processes of one machine, Etcd those of a cluster.
type Coordinator interface {
	// Campaign waits until c.Node holds the primary role of c.Pool, or
	// ctx is done, and returns the term it was granted.
	Campaign(ctx context.Context, c Candidate) (*Term, error)
	// Leader returns the node that holds the primary role of pool now, or
	// ErrNoLeader.
	Leader(ctx context.Context, pool string) (Leader, error)
	// Close ends the coordinator's terms (without resigning them: their
	// leases run out) and releases its resources.
	Close() error
}

// Candidate is who campaigns for which pool.
type Candidate struct {
	// Pool names the pool in the coordinator: letters, digits, '-', '_'
	// and '.'.
	Pool string
	// Node names the candidate, for Leader and the logs.
	Node string
	// MinToken is the epoch of the candidate's pool: a token at or below
	// it would not fence the pool's earlier primaries, so a coordinator
	// grants a larger one or fails with ErrFenced.
	MinToken uint64
}

// Leader is the holder of a pool's primary role.
type Leader struct {
	Node  string `json:"node"`
	Token uint64 `json:"token"`
	// Expires is when the holder's lease runs out unless renewed; zero
	// when the coordinator does not say.
	Expires time.Time `json:"expires,omitzero"`
}

// checkPoolName refuses a pool name that could escape a directory or a
// key prefix.
func checkPoolName(pool string) error {
	ok := pool != "" && pool != "." && pool != ".." && len(pool) <= 200
	for _, r := range pool {
		ok = ok && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}
	if !ok || strings.HasPrefix(pool, ".") {
		return fmt.Errorf("ha: pool name %q: want letters, digits, '-', '_' or '.', not first: %w", pool, pmemgo.ErrInvalidOptions)
	}
	return nil
}

// Term is one grant of a pool's primary role: its fencing token, and how
// long the role is known to hold. A coordinator renews the lease in the
// background; each renewal moves ValidUntil on, and a lease lost (not
// renewed in time, taken, resigned) closes Done for good.
type Term struct {
	// Pool and Node are the candidate's.
	Pool, Node string
	// Token is the fencing token: the epoch of the pool for this term.
	Token uint64
	// Incarnation is the newest epoch registered for the pool when the
	// term was granted (Register): the incarnation that may have
	// acknowledged commits. A pool whose epoch is older does not hold
	// them, and must not become the primary's.
	Incarnation uint64

	mu         sync.Mutex
	validUntil time.Time
	err        error
	done       chan struct{}
	heaps      map[*heap.Heap]struct{}
	resign     func(ctx context.Context) error
	register   func(ctx context.Context) error
	// stop ends the coordinator's renewals of the term.
	stop     func()
	stopOnce sync.Once
	// paused stops renewals without ending the term, as a partition from
	// the coordinator would (tests only).
	paused atomic.Bool
}

func newTerm(c Candidate, token uint64, validUntil time.Time) *Term {
	return &Term{Pool: c.Pool, Node: c.Node, Token: token, validUntil: validUntil, done: make(chan struct{}), heaps: map[*heap.Heap]struct{}{}}
}

// Done is closed when the term ends: the lease was lost or resigned.
func (t *Term) Done() <-chan struct{} { return t.done }

// Err says why the term ended, or is nil while it holds.
func (t *Term) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// ValidUntil is the time until which the role is known to hold: the start
// of the last successful renewal plus the lease's time to live, less the
// coordinator's margin. It is zero once the term ended.
func (t *Term) ValidUntil() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.validUntil
}

// Fence binds h to the term: h commits only while the term is valid
// (heap.SetLeaseDeadline follows each renewal) and is fenced when the term
// ends. The returned function unbinds it, leaving h fenced.
func (t *Term) Fence(h *heap.Heap) (unbind func()) {
	t.mu.Lock()
	if t.err != nil {
		h.Fence()
	} else {
		t.heaps[h] = struct{}{}
		h.SetLeaseDeadline(t.validUntil)
	}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.heaps, h)
		t.mu.Unlock()
		h.Fence()
	}
}

// Resign gives the role up, so that another candidate gets it at once
// rather than when the lease runs out. Heaps bound to the term are fenced
// first.
func (t *Term) Resign(ctx context.Context) error {
	t.end(errors.New("resigned"))
	return t.resign(ctx)
}

// Register records the term's token as the pool's newest incarnation,
// if the term still holds: from then on, a candidate whose pool's epoch
// is older is refused (ErrStaleEpoch of package mirror, by StartPrimary),
// so that a primary that returns with its own, older copy of the pool
// cannot replace the history of this one. Register once the pool carries
// the token as its epoch and before the first commit of the term.
func (t *Term) Register(ctx context.Context) error {
	if err := t.Err(); err != nil {
		return err
	}
	return t.register(ctx)
}

// renewed moves the term's validity on, unless it ended.
func (t *Term) renewed(validUntil time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil || !validUntil.After(t.validUntil) {
		return
	}
	t.validUntil = validUntil
	for h := range t.heaps {
		h.SetLeaseDeadline(validUntil)
	}
}

// end ends the term with err, fencing its heaps and stopping renewals. It
// reports whether this call ended it.
func (t *Term) end(err error) bool {
	t.mu.Lock()
	first := t.err == nil
	if first {
		t.err = fmt.Errorf("ha: pool %s term %d of %s: %w", t.Pool, t.Token, t.Node, err)
		t.validUntil = time.Time{}
		for h := range t.heaps {
			h.Fence()
		}
		close(t.done)
	}
	t.mu.Unlock()
	t.stopOnce.Do(func() {
		if t.stop != nil {
			t.stop()
		}
	})
	return first
}

// expire ends the term when its validity passes without a renewal: the
// heaps' own deadline already stops their commits, this closes Done.
func (t *Term) expire(now time.Time) bool {
	v := t.ValidUntil()
	if v.IsZero() || now.Before(v) {
		return false
	}
	return t.end(fmt.Errorf("lease not renewed in time (valid until %s): %w", v.Format(time.RFC3339Nano), pmemgo.ErrFenced))
}
