package ha

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// GuardOptions configures a Guard.
type GuardOptions struct {
	// PoolPath is the application's pool file; Pool its name in the
	// coordinator; Node this machine's name (the guardian campaigns as
	// Node+"-guard").
	PoolPath, Pool, Node string
	Coordinator          Coordinator
	// Standby is the address of the standby's replica server, Handoff
	// that of its handoff listener.
	Standby, Handoff string
	// TLS is the guardian's client configuration for both.
	TLS *tls.Config
	// Budget bounds a save, from the call to the handoff: the battery's
	// time. Zero means 2 seconds.
	Budget time.Duration
	// Logger receives what the guardian does; nil discards it.
	Logger *slog.Logger
	// Verify hashes the whole pool on both sides for the handoff even when
	// the save shipped only what the primary's dirty-chunk record lists:
	// a record that missed a change is then refused by the standby, at
	// the cost of reading the pool on both sides within the budget.
	Verify bool
	// Dial, if set, connects to the standby's replica server
	// (mirror.Options.Dial).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Key is the pool key of a sealed pool (heap.Options.Key). A sealed
	// pool is shipped as its sealed file, so the standby's replica holds
	// only ciphertext: the chunks its dirty-chunk record lists, or without
	// a usable record the whole file (a sealed pool's snapshots are never
	// deltas by hashes).
	Key []byte
}

// Guard saves a pool whose application stopped (crash, SIGKILL, power
// loss) to the standby and hands the pool over: it is the part of a
// guardian process that does not depend on how the application is
// watched, for applications that call it themselves.
type Guard struct {
	opts GuardOptions
	log  *slog.Logger
}

// SaveReport says what a save did.
type SaveReport struct {
	Handoff Handoff
	// Record is the time to read the primary's dirty-chunk record, Open
	// that to open (recover) the pool, Ship that to bring the standby up
	// to date (finding what it lacks included), Hash that to hash the
	// pool for the handoff (zero for a listed save), Send that to hand
	// off, Total the whole save.
	Record, Open, Ship, Hash, Send, Total time.Duration
	// Listed is set when the save shipped only the chunks that the
	// primary's dirty-chunk record lists; Fallback says why it did not,
	// when it did not.
	Listed   bool
	Fallback string
	// aborted is set once the standby was told the save failed.
	aborted bool
}

// NewGuard returns a guard with opts.
func NewGuard(opts GuardOptions) (*Guard, error) {
	if err := checkPoolName(opts.Pool); err != nil {
		return nil, err
	}
	if opts.Coordinator == nil || opts.TLS == nil || opts.PoolPath == "" || opts.Standby == "" || opts.Handoff == "" {
		return nil, fmt.Errorf("ha: guard needs a pool path, a coordinator, the standby's addresses and TLS: %w", pmemgo.ErrInvalidOptions)
	}
	if opts.Budget == 0 {
		opts.Budget = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{opts: opts, log: opts.Logger}, nil
}

// Save ships the pool to the standby within the budget and hands it
// over. The application must have stopped: the pool is opened (its
// crash recovered) by the guardian. Save takes the role from the
// coordinator first (the application's lease must have ended, or its
// process be gone), so that no one else writes the pool meanwhile, and
// the standby waits while it holds it. When the budget runs out the
// standby is told that the save did not complete, and promotes from its
// last complete state.
func (g *Guard) Save(ctx context.Context) (SaveReport, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, g.opts.Budget)
	defer cancel()
	rep, err := g.save(ctx, start)
	if err != nil && !rep.aborted {
		err = errors.Join(err, g.abort(ctx, rep.Handoff.UUID, err, start))
	}
	return rep, err
}

// abort tells the standby that the save did not complete, so that it
// promotes from its last complete state at once rather than when the
// lease runs out.
func (g *Guard) abort(ctx context.Context, uuid string, cause error, start time.Time) error {
	g.log.Error("ha: save failed; the standby promotes from its last complete state", "pool", g.opts.Pool, "err", cause, "elapsed", time.Since(start))
	if uuid == "" {
		return nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	return SendHandoff(actx, g.opts.Handoff, g.opts.TLS, Handoff{Pool: g.opts.Pool, UUID: uuid, Aborted: cause.Error()})
}

func (g *Guard) save(ctx context.Context, start time.Time) (rep SaveReport, err error) {
	// The pool file's head and the record are read before the pool is
	// opened, which changes what the record is checked against.
	head, err := readPoolHead(g.opts.PoolPath, g.opts.Key)
	if err != nil {
		return rep, fmt.Errorf("ha: guard: %w", err)
	}
	ph := head.hdr
	base, berr := readDirtyBase(g.opts.PoolPath, head)
	rep.Record = time.Since(start)
	// The role is taken before the pool is opened, which for a large or
	// sealed pool takes a while: the standby promotes on its own once the
	// pool has had no primary for its grace. The header gives the epoch
	// to outbid.
	rep.Handoff.UUID = hex.EncodeToString(ph.UUID[:])
	term, err := g.opts.Coordinator.Campaign(ctx, Candidate{Pool: g.opts.Pool, Node: g.opts.Node + "-guard", MinToken: ph.Epoch})
	if err != nil {
		return rep, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		term.Resign(rctx)
	}()
	openStart := time.Now()
	h, err := heap.Open(g.opts.PoolPath, &heap.Options{Timeout: g.opts.Budget, Key: g.opts.Key})
	if err != nil {
		return rep, fmt.Errorf("ha: guard: open %s: %w", g.opts.PoolPath, err)
	}
	defer h.Close()
	rep.Open = time.Since(openStart)
	if uuid := h.UUID(); uuid != ph.UUID || h.Epoch() >= term.Token {
		return rep, fmt.Errorf("ha: guard: %s opened as pool %x at epoch %d, its header said pool %x at epoch %d (token %d): %w",
			g.opts.PoolPath, uuid, h.Epoch(), ph.UUID, ph.Epoch, term.Token, pmemgo.ErrCorrupt)
	}
	_, sealed := device.SealedFile(h.Device())
	if berr == nil {
		berr = checkOpened(h, base)
	}
	if berr != nil {
		base, rep.Fallback = nil, berr.Error()
		g.log.Warn("ha: guard: the dirty-chunk record cannot be used; the save finds what changed by hashing the whole pool (a sealed pool's: ships the whole sealed file)",
			"pool", g.opts.Pool, "record", dirtyPath(g.opts.PoolPath), "reason", berr)
	}
	term.Fence(h)
	shipStart := time.Now()
	// A sync commit waits for its acknowledgement up to AckTimeout
	// whatever the context: the budget's rest bounds it.
	left := time.Until(start.Add(g.opts.Budget))
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{g.opts.Standby}, Mode: mirror.Sync, AckTimeout: max(left, time.Millisecond), TLS: g.opts.TLS, Epoch: term.Token, Logger: g.log, Dial: g.opts.Dial, Base: base})
	if err != nil {
		return rep, err
	}
	err = m.Flush(ctx)
	st := m.Status()
	seq := m.Seq()
	if err != nil {
		// The standby is told before the mirror closes, which waits for
		// writes in flight on what may be a slow link.
		err = fmt.Errorf("ha: guard: ship to %s: %w", g.opts.Standby, err)
		rep.aborted = true
		err = errors.Join(err, g.abort(ctx, rep.Handoff.UUID, err, start))
		m.Close()
		return rep, err
	}
	m.Close()
	rep.Ship = time.Since(shipStart)
	hashStart := time.Now()
	for _, s := range st {
		rep.Listed = s.Listed
		rep.Handoff.Bytes += s.SnapshotBytes
	}
	if base != nil && !rep.Listed {
		rep.Fallback = "the standby does not hold the batch the record starts from"
		g.log.Warn("ha: guard: the standby does not hold the batch the record starts from; it was sent what differs by chunk hashes", "pool", g.opts.Pool, "record_epoch", base.Epoch, "record_acked", base.MinSeq)
	}
	var sum uint64
	// The replica is a byte-for-byte copy of the pool at the flush's
	// commit, and nothing was committed since. A listed save skips the
	// check: hashing the whole pool on both sides is what it saves.
	noHash := rep.Listed && !g.opts.Verify || sealed
	var digest uint64
	if err := h.View(func(*heap.Tx) error {
		if sealed {
			// Nothing flushes since the mirror closed: the digest is
			// that of the lines the replica now holds.
			info, _ := device.SealedDigestOf(h.Device())
			digest = info.Digest
			return nil
		}
		if noHash {
			return nil
		}
		if !device.SharesFile(h.Device()) {
			sum = xxhash.Sum64(h.Device().Bytes())
			return nil
		}
		// The file holds the mapping's bytes. Reading it copies from the
		// page cache in the kernel, where hashing the mapping, mapped a
		// moment ago, would fault on every page first.
		var err error
		sum, err = hashFile(h.Path())
		return err
	}); err != nil {
		return rep, err
	}
	rep.Hash = time.Since(hashStart)
	rep.Handoff = Handoff{Pool: g.opts.Pool, UUID: rep.Handoff.UUID, Epoch: term.Token, Seq: seq, Hash: sum, NoHash: noHash, Sealed: sealed, Digest: digest, Bytes: rep.Handoff.Bytes, Save: time.Since(start)}
	sendStart := time.Now()
	if err := SendHandoff(ctx, g.opts.Handoff, g.opts.TLS, rep.Handoff); err != nil {
		return rep, err
	}
	rep.Send = time.Since(sendStart)
	rep.Total = time.Since(start)
	g.log.Info("ha: pool handed over", "pool", g.opts.Pool, "epoch", term.Token, "seq", seq, "bytes", rep.Handoff.Bytes, "listed", rep.Listed, "total", rep.Total)
	return rep, nil
}
