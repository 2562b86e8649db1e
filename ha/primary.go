package ha

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// PrimaryOptions configures StartPrimary.
type PrimaryOptions struct {
	// Coordinator decides who is primary.
	Coordinator Coordinator
	// Pool names the pool in the coordinator; Node names this node.
	Pool, Node string
	// Mirror configures replication. Its Epoch is set to the term's token.
	Mirror mirror.Options
	// Logger receives what the primary does; nil discards it.
	Logger *slog.Logger
	// NoDirtyRecord turns off the record of changed chunks that a
	// guardian's save ships (Guard): its saves then find what changed by
	// hashing the whole pool on both sides, or for a sealed pool ship
	// its whole sealed file.
	NoDirtyRecord bool
}

// Primary is a heap that replicates as the primary of its pool for one
// term of the coordinator: it commits only while the term is valid, and
// its replicas know it by the term's token.
type Primary struct {
	h      *heap.Heap
	term   *Term
	m      *mirror.Mirror
	unbind func()
	log    *slog.Logger
}

// StartPrimary makes h the primary of its pool. In order:
//  1. campaign for the role (waiting until ctx is done), for a token
//     above h's epoch;
//  2. refuse, with mirror.ErrStaleEpoch, a pool whose epoch is older than
//     the incarnation registered with the coordinator: a primary that
//     returns with its own copy after another took over lacks that one's
//     acknowledged commits, and replicating it would erase them;
//  3. bind h to the term (heap.SetLeaseDeadline, heap.Fence) and start
//     the mirror with the token as epoch;
//  4. flush, so that the replicas hold the new epoch, and register the
//     term as the pool's incarnation, before any commit of the term.
//
// A campaign that ctx ends while another node holds the role returns an
// error wrapping pmemgo.ErrFenced and naming that node.
func StartPrimary(ctx context.Context, h *heap.Heap, opts PrimaryOptions) (*Primary, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	term, err := opts.Coordinator.Campaign(ctx, Candidate{Pool: opts.Pool, Node: opts.Node, MinToken: h.Epoch()})
	if err != nil {
		log.Warn("ha: not elected primary", "pool", opts.Pool, "node", opts.Node, "err", err)
		return nil, err
	}
	fail := func(err error) (*Primary, error) {
		log.Error("ha: primary refused", "pool", opts.Pool, "node", opts.Node, "token", term.Token, "err", err)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resignWait)
		defer cancel()
		term.Resign(rctx)
		return nil, err
	}
	if epoch := h.Epoch(); epoch < term.Incarnation {
		return fail(fmt.Errorf("ha: pool %s: epoch %d of %s is older than incarnation %d registered with the coordinator; the pool may lack acknowledged commits, restore it from a replica: %w",
			opts.Pool, epoch, h.Path(), term.Incarnation, mirror.ErrStaleEpoch))
	}
	p := &Primary{h: h, term: term, unbind: term.Fence(h), log: log}
	mo := opts.Mirror
	mo.Epoch = term.Token
	var rec *dirtyRecord
	if !opts.NoDirtyRecord {
		// Marking starts before the mirror, so that no change after the
		// tracker's start is missed.
		if rec, err = newDirtyRecord(h); err != nil {
			log.Warn("ha: no dirty-chunk record; a guardian's save will hash the whole pool", "pool", opts.Pool, "path", dirtyPath(h.Path()), "err", err)
		} else {
			mo.OnCapture = chainCapture(mo.OnCapture, rec.capture)
		}
	}
	if p.m, err = mirror.Start(h, mo); err != nil {
		if rec != nil {
			rec.close()
		}
		p.unbind()
		return fail(fmt.Errorf("ha: pool %s: %w", opts.Pool, err))
	}
	if rec != nil {
		rec.start(p.m)
	}
	if err := p.m.Flush(ctx); err != nil {
		p.m.Close()
		p.unbind()
		return fail(fmt.Errorf("ha: pool %s: replicas did not take epoch %d: %w", opts.Pool, term.Token, err))
	}
	if err := term.Register(ctx); err != nil {
		p.m.Close()
		p.unbind()
		return fail(err)
	}
	log.Info("ha: primary", "pool", opts.Pool, "node", opts.Node, "token", term.Token)
	go p.watch()
	return p, nil
}

// chainCapture returns a capture hook that calls a, if set, then b.
func chainCapture(a, b func(uint64)) func(uint64) {
	if a == nil {
		return b
	}
	return func(seq uint64) { a(seq); b(seq) }
}

// resignWait bounds the wait of a resignation after a refusal.
const resignWait = 5 * time.Second

// watch logs the end of the term: from then on the heap is fenced. The
// mirror goes on, so that commits made within the term are still
// acknowledged; replicas refuse it once a newer primary reached them.
func (p *Primary) watch() {
	<-p.term.Done()
	p.log.Error("ha: primary role lost; commits are fenced", "pool", p.term.Pool, "node", p.term.Node, "token", p.term.Token, "err", p.term.Err())
}

// Term returns the primary's term.
func (p *Primary) Term() *Term { return p.term }

// Mirror returns the primary's mirror.
func (p *Primary) Mirror() *mirror.Mirror { return p.m }

// Close stops replicating, fences the heap and resigns the role, so that
// another node takes it at once. The heap stays open.
func (p *Primary) Close(ctx context.Context) error {
	p.m.Close()
	p.unbind()
	return p.term.Resign(ctx)
}
