package ha

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/pmemgo/pmemgo"
)

// EtcdOptions configures an Etcd coordinator.
type EtcdOptions struct {
	// Prefix is the key prefix of the elections: pool P's candidates
	// are keys under Prefix+P+"/". Empty means "/pmemgo/ha/".
	Prefix string
	// TTL is the lease's time to live, in whole seconds at least 1. Zero
	// means 2 seconds.
	TTL time.Duration
	// Margin is how long before the lease's end its holder stops
	// committing. Zero means TTL/4.
	Margin time.Duration
}

// Etcd is the coordinator of nodes that span machines: each candidate
// holds an etcd lease, campaigns in the pool's election
// (go.etcd.io/etcd/client/v3/concurrency), and its token is the
// revision at which its election key was created, which etcd makes
// larger than any earlier one. The holder renews its lease itself (one
// KeepAliveOnce each TTL/4), so that the term's validity is counted from
// a renewal's start.
type Etcd struct {
	cli   *clientv3.Client
	opts  EtcdOptions
	terms termSet
}

// NewEtcd returns the coordinator using cli, which the caller closes
// after the coordinator.
func NewEtcd(cli *clientv3.Client, opts EtcdOptions) (*Etcd, error) {
	if opts.Prefix == "" {
		opts.Prefix = "/pmemgo/ha/"
	}
	if opts.TTL == 0 {
		opts.TTL = 2 * time.Second
	}
	if opts.Margin == 0 {
		opts.Margin = opts.TTL / 4
	}
	if opts.TTL < time.Second || opts.TTL%time.Second != 0 || opts.Margin < 0 || opts.Margin >= opts.TTL {
		return nil, fmt.Errorf("ha: etcd lease TTL %v, margin %v: want whole seconds, 0 <= margin < TTL: %w", opts.TTL, opts.Margin, pmemgo.ErrInvalidOptions)
	}
	return &Etcd{cli: cli, opts: opts}, nil
}

func (c *Etcd) electionPrefix(pool string) string { return c.opts.Prefix + pool + "/" }

// epochKey holds the pool's newest registered incarnation. It is beside
// the election's prefix, not under it, so that it is never a candidate.
func (c *Etcd) epochKey(pool string) string { return c.opts.Prefix + pool + ".epoch" }

// incarnation reads the pool's newest registered incarnation.
func (c *Etcd) incarnation(ctx context.Context, pool string) (uint64, error) {
	resp, err := c.cli.Get(ctx, c.epochKey(pool))
	if err != nil {
		return 0, fmt.Errorf("ha: etcd incarnation of pool %s: %w", pool, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	v, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ha: etcd key %s: %v: %w", c.epochKey(pool), err, pmemgo.ErrCorrupt)
	}
	return v, nil
}

// Campaign waits until cand.Node leads cand.Pool's election.
func (c *Etcd) Campaign(ctx context.Context, cand Candidate) (*Term, error) {
	if err := checkPoolName(cand.Pool); err != nil {
		return nil, err
	}
	grant, err := c.cli.Grant(ctx, int64(c.opts.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("ha: etcd lease for pool %s: %w", cand.Pool, err)
	}
	revoke := func() {
		rctx, cancel := context.WithTimeout(context.Background(), c.opts.TTL)
		defer cancel()
		c.cli.Revoke(rctx, grant.ID)
	}
	s, err := concurrency.NewSession(c.cli, concurrency.WithLease(grant.ID), concurrency.WithTTL(int(c.opts.TTL/time.Second)))
	if err != nil {
		revoke()
		return nil, fmt.Errorf("ha: etcd session for pool %s: %w", cand.Pool, err)
	}
	// The term renews the lease itself, counting validity from the start
	// of each renewal; the session's own keep-alive would not say when.
	s.Orphan()
	e := concurrency.NewElection(s, c.electionPrefix(cand.Pool))
	// A campaign that waits for long is renewed meanwhile, so that its
	// key is not lost before the role comes to it.
	wait := make(chan struct{})
	go c.keepWaiting(grant.ID, wait)
	err = e.Campaign(ctx, cand.Node)
	close(wait)
	if err != nil {
		revoke()
		if ctx.Err() != nil {
			return nil, c.notPrimary(cand, ctx.Err())
		}
		return nil, fmt.Errorf("ha: etcd campaign for pool %s: %w", cand.Pool, err)
	}
	token := uint64(e.Rev())
	if token <= cand.MinToken {
		revoke()
		return nil, fmt.Errorf("ha: etcd granted pool %s revision %d, not above the pool's epoch %d: %w", cand.Pool, token, cand.MinToken, pmemgo.ErrFenced)
	}
	start := time.Now()
	if _, err := c.cli.KeepAliveOnce(ctx, grant.ID); err != nil {
		revoke()
		return nil, fmt.Errorf("ha: etcd lease of pool %s lost at election: %w", cand.Pool, err)
	}
	incarnation, err := c.incarnation(ctx, cand.Pool)
	if err != nil {
		revoke()
		return nil, err
	}
	t := c.startTerm(cand, token, start, grant.ID, e)
	t.Incarnation = incarnation
	return t, nil
}

// keepWaiting renews a campaign's lease until wait is closed.
func (c *Etcd) keepWaiting(id clientv3.LeaseID, wait chan struct{}) {
	tick := time.NewTicker(c.opts.TTL / 4)
	defer tick.Stop()
	for {
		select {
		case <-wait:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.TTL/4)
			c.cli.KeepAliveOnce(ctx, id)
			cancel()
		}
	}
}

// notPrimary says who holds the role a campaign did not get.
func (c *Etcd) notPrimary(cand Candidate, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.TTL)
	defer cancel()
	l, err := c.Leader(ctx, cand.Pool)
	if err != nil {
		return fmt.Errorf("ha: pool %s: %s not elected: %w", cand.Pool, cand.Node, cause)
	}
	return fmt.Errorf("ha: pool %s: %s not elected, %s holds token %d: %w: %w", cand.Pool, cand.Node, l.Node, l.Token, pmemgo.ErrFenced, cause)
}

func (c *Etcd) startTerm(cand Candidate, token uint64, start time.Time, id clientv3.LeaseID, e *concurrency.Election) *Term {
	t := newTerm(cand, token, start.Add(c.opts.TTL-c.opts.Margin))
	stop := make(chan struct{})
	t.stop = func() { close(stop) }
	// Registering is a transaction that holds only while the term's key
	// is the one this campaign created, so a term that lost its key
	// cannot register.
	t.register = func(ctx context.Context) error {
		resp, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())).
			Then(clientv3.OpPut(c.epochKey(cand.Pool), strconv.FormatUint(token, 10))).
			Commit()
		if err != nil {
			return fmt.Errorf("ha: etcd register pool %s token %d: %w", cand.Pool, token, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("ha: etcd register pool %s token %d: election key gone: %w", cand.Pool, token, pmemgo.ErrFenced)
		}
		return nil
	}
	t.resign = func(ctx context.Context) error {
		err := e.Resign(ctx)
		// The term's end may have revoked the lease already.
		if _, rerr := c.cli.Revoke(ctx, id); !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			err = errors.Join(err, rerr)
		}
		return err
	}
	c.terms.run(t, c.opts.TTL/4, stop, func(start time.Time) { c.renew(t, id, start) }, func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.TTL)
		c.cli.Revoke(ctx, id)
		cancel()
	})
	return t
}

// renew renews t's lease once, every TTL/4 (termSet.run). A lease that
// etcd no longer knows ends the term; one it cannot reach is retried until
// the term's validity runs out, and revoked when the term stops, so that a
// new campaign is not kept waiting for it.
func (c *Etcd) renew(t *Term, id clientv3.LeaseID, start time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.TTL/4)
	resp, err := c.cli.KeepAliveOnce(ctx, id)
	cancel()
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		t.end(fmt.Errorf("etcd lease %x expired: %w", id, pmemgo.ErrFenced))
	case err == nil && resp.TTL > 0:
		t.renewed(start.Add(min(c.opts.TTL, time.Duration(resp.TTL)*time.Second) - c.opts.Margin))
	}
}

// Leader returns the leader of pool's election: its oldest key.
func (c *Etcd) Leader(ctx context.Context, pool string) (Leader, error) {
	if err := checkPoolName(pool); err != nil {
		return Leader{}, err
	}
	resp, err := c.cli.Get(ctx, c.electionPrefix(pool), clientv3.WithFirstCreate()...)
	if err != nil {
		return Leader{}, fmt.Errorf("ha: etcd leader of pool %s: %w", pool, err)
	}
	if len(resp.Kvs) == 0 {
		return Leader{}, fmt.Errorf("pool %s: %w", pool, ErrNoLeader)
	}
	kv := resp.Kvs[0]
	return Leader{Node: string(kv.Value), Token: uint64(kv.CreateRevision)}, nil
}

// Close ends the coordinator's terms, revoking their leases.
func (c *Etcd) Close() error {
	c.terms.close()
	return nil
}
