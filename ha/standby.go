package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/recovery"
)

// StandbyOptions configures a Standby.
type StandbyOptions struct {
	// Pool names the pool in the coordinator; Coordinator says who is
	// primary.
	Pool        string
	Coordinator Coordinator
	// Server configures the replica server: its Dir holds the replica of
	// this one pool, its TLS serves the handoffs too.
	Server mirror.ServerOptions
	// Path is where the promoted pool is installed. Empty means
	// Server.Dir/promoted/Pool.pool.
	Path string
	// Poll is how often the standby asks the coordinator who is primary.
	// Zero means 20ms.
	Poll time.Duration
	// Grace is how long the pool must have no primary before the standby
	// promotes without a handoff: it leaves a guardian the time to take
	// the role and save. Zero means 200ms.
	Grace time.Duration
	// Logger receives what the standby does; nil discards it.
	Logger *slog.Logger
	// Key is the pool key of a sealed pool (heap.Options.Key). The
	// replica server never uses it: it stores and serves the sealed file
	// as it came. The standby needs it to promote: to check the replica's
	// records and digest, recover the pool and hand it to the
	// application. Without it a sealed replica is not promoted; with it a
	// plain replica is not either.
	Key []byte
}

// Promotion says how a standby took over. The standby keeps it in
// Server.Dir/promotion.json (ReadPromotion).
type Promotion struct {
	// Path is the installed pool, recovered and checked.
	Path string `json:"path"`
	// At is when the standby promoted.
	At time.Time `json:"at"`
	// Reason is "handoff", or why the standby promoted from its last
	// complete state without one.
	Reason string `json:"reason"`
	// Epoch and Seq are the position of the installed state.
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
	// Handoff is the accepted handoff, if any: its bytes and save time.
	Handoff *Handoff `json:"handoff,omitempty"`
	// Restore is the time from the decision to a pool ready for the
	// application: installing, checking, opening (recovery).
	Restore time.Duration `json:"restore_ns"`
}

// promotionFile is where a standby keeps its last promotion.
func promotionFile(dir string) string { return filepath.Join(dir, "promotion.json") }

// ReadPromotion returns the last promotion of the standby whose replica
// directory is dir, or an error wrapping os.ErrNotExist if it has not
// promoted.
func ReadPromotion(dir string) (Promotion, error) {
	var p Promotion
	b, err := os.ReadFile(promotionFile(dir))
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("ha: %s: %v: %w", promotionFile(dir), err, pmemgo.ErrCorrupt)
	}
	return p, nil
}

// Standby is a replica server that takes over its pool: on a handoff
// from the primary's guardian, or when the pool has had no primary for
// Grace after having one, it installs the newest complete state, checks
// and opens it, and returns it for the application to start on (which
// takes a new epoch with StartPrimary).
type Standby struct {
	opts     StandbyOptions
	log      *slog.Logger
	srv      *mirror.Server
	handoffs chan Handoff
}

// NewStandby opens the replica directory (mirror.NewServer).
func NewStandby(opts StandbyOptions) (*Standby, error) {
	if err := checkPoolName(opts.Pool); err != nil {
		return nil, err
	}
	if opts.Coordinator == nil || opts.Server.TLS == nil {
		return nil, fmt.Errorf("ha: standby needs a coordinator and a TLS configuration: %w", pmemgo.ErrInvalidOptions)
	}
	if opts.Path == "" {
		opts.Path = filepath.Join(opts.Server.Dir, "promoted", opts.Pool+".pool")
	}
	if opts.Poll == 0 {
		opts.Poll = 20 * time.Millisecond
	}
	if opts.Grace == 0 {
		opts.Grace = 200 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Server.Logger == nil {
		opts.Server.Logger = opts.Logger
	}
	srv, err := mirror.NewServer(opts.Server)
	if err != nil {
		return nil, err
	}
	return &Standby{opts: opts, log: opts.Logger, srv: srv, handoffs: make(chan Handoff, 1)}, nil
}

// Server returns the replica server.
func (s *Standby) Server() *mirror.Server { return s.srv }

// Run serves primaries on replicas and guardians on handoffs until it
// promotes, or ctx is done. Both listeners are closed when it returns.
func (s *Standby) Run(ctx context.Context, replicas, handoffs net.Listener) (Promotion, error) {
	go s.srv.Serve(replicas)
	go serveHandoffs(handoffs, s.opts.Server.TLS, 10*time.Second, s.checkHandoff)
	defer handoffs.Close()
	defer s.srv.Close()
	tick := time.NewTicker(s.opts.Poll)
	defer tick.Stop()
	var sawLeader bool
	var vacant time.Time
	for {
		select {
		case <-ctx.Done():
			return Promotion{}, ctx.Err()
		case h := <-s.handoffs:
			if h.Aborted != "" {
				s.log.Warn("ha: standby promotes from its last complete state: the save did not complete", "pool", s.opts.Pool, "reason", h.Aborted)
				return s.promote(fmt.Sprintf("save aborted (%s): last complete state", h.Aborted), &h)
			}
			return s.promote("handoff", &h)
		case now := <-tick.C:
			_, err := s.opts.Coordinator.Leader(ctx, s.opts.Pool)
			switch {
			case err == nil:
				sawLeader, vacant = true, time.Time{}
			case !errors.Is(err, ErrNoLeader):
				s.log.Warn("ha: standby cannot ask the coordinator", "pool", s.opts.Pool, "err", err)
			case !sawLeader:
			case vacant.IsZero():
				vacant = now
			case now.Sub(vacant) >= s.opts.Grace:
				s.log.Warn("ha: standby promotes from its last complete state: the primary's lease ended without a handoff", "pool", s.opts.Pool, "grace", s.opts.Grace)
				return s.promote("primary lease ended without a handoff: last complete state", nil)
			}
		}
	}
}

// replicaStatus returns the status of the one pool the replica holds.
func (s *Standby) replicaStatus() (mirror.PoolStatus, error) {
	st := s.srv.Status()
	if len(st) != 1 {
		return mirror.PoolStatus{}, fmt.Errorf("replica directory %s holds %d pools, want 1", s.opts.Server.Dir, len(st))
	}
	return st[0], nil
}

// checkHandoff accepts a handoff whose pool, position and hash are the
// replica's, and passes it to Run.
func (s *Standby) checkHandoff(h Handoff) error {
	err := s.validate(h)
	if err != nil {
		s.log.Error("ha: handoff refused; the standby keeps its last complete state", "pool", h.Pool, "epoch", h.Epoch, "seq", h.Seq, "err", err)
		return err
	}
	select {
	case s.handoffs <- h:
		s.log.Info("ha: handoff accepted", "pool", h.Pool, "epoch", h.Epoch, "seq", h.Seq, "bytes", h.Bytes, "save", h.Save)
		return nil
	default:
		return fmt.Errorf("a handoff is already being served: %w", ErrHandoff)
	}
}

func (s *Standby) validate(h Handoff) error {
	if h.Pool != s.opts.Pool {
		return fmt.Errorf("handoff of pool %q to the standby of %q: %w", h.Pool, s.opts.Pool, ErrHandoff)
	}
	st, err := s.replicaStatus()
	if err != nil {
		return fmt.Errorf("%v: %w", err, ErrHandoff)
	}
	switch {
	case h.UUID != st.Pool:
		return fmt.Errorf("handoff of pool UUID %s, the replica holds %s: %w", h.UUID, st.Pool, ErrHandoff)
	case h.Aborted != "":
		return nil
	case h.Epoch != st.Epoch || h.Seq != st.Seq:
		return fmt.Errorf("handoff at batch %d of epoch %d, the replica holds batch %d of epoch %d: %w", h.Seq, h.Epoch, st.Seq, st.Epoch, ErrHandoff)
	case h.Sealed:
		// The content is checked against h.Digest with the key when the
		// standby promotes: the sealed file must be read whole for it.
		if s.opts.Key == nil {
			return fmt.Errorf("handoff of a sealed pool, and the standby has no pool key: %w", ErrHandoff)
		}
		if sealed, err := recovery.IsSealedFile(st.Path); err != nil || !sealed {
			return fmt.Errorf("handoff of a sealed pool, and the replica %s is not sealed (%v): %w", st.Path, err, ErrHandoff)
		}
		return nil
	case h.NoHash:
		// The replica holds exactly the guardian's batches (the
		// acknowledgements carry their chain): the epoch is the
		// guardian's own, so its batch Seq is the state it saved.
		return nil
	}
	sum, err := hashFile(st.Path)
	if err != nil {
		return fmt.Errorf("hash of %s: %v: %w", st.Path, err, ErrHandoff)
	}
	if sum != h.Hash {
		return fmt.Errorf("pool hash %016x, the replica's is %016x: %w", h.Hash, sum, ErrHandoff)
	}
	return nil
}

// promote stops the replica server, installs a copy of its pool at
// Path, and checks and opens it. A pool that fails the check is not
// returned: the application must not start on it.
func (s *Standby) promote(reason string, h *Handoff) (Promotion, error) {
	start := time.Now()
	// Closing the server finishes what its sessions applied: the pool
	// file is then the state after the complete batch its status names.
	s.srv.Close()
	st, err := s.replicaStatus()
	if err != nil {
		return Promotion{}, fmt.Errorf("ha: promote: %w", err)
	}
	if err := installCopy(st.Path, s.opts.Path); err != nil {
		return Promotion{}, fmt.Errorf("ha: promote: install %s: %w", s.opts.Path, err)
	}
	if err := s.checkInstalled(st, h); err != nil {
		s.log.Error("ha: promoted pool fails validation; the application is not started", "path", s.opts.Path, "err", err)
		return Promotion{}, err
	}
	hp, err := heap.Open(s.opts.Path, &heap.Options{Key: s.opts.Key})
	if err != nil {
		return Promotion{}, fmt.Errorf("ha: promote: open %s: %w", s.opts.Path, err)
	}
	if err := checkSealedDigest(hp, st, h); err != nil {
		hp.Close()
		s.log.Error("ha: promoted pool fails validation; the application is not started", "path", s.opts.Path, "err", err)
		return Promotion{}, err
	}
	if err := hp.Close(); err != nil {
		return Promotion{}, fmt.Errorf("ha: promote: close %s: %w", s.opts.Path, err)
	}
	p := Promotion{Path: s.opts.Path, At: time.Now(), Reason: reason, Epoch: st.Epoch, Seq: st.Seq, Handoff: h, Restore: time.Since(start)}
	if err := writeFileDurably(promotionFile(s.opts.Server.Dir), p); err != nil {
		s.log.Warn("ha: promotion not recorded", "err", err)
	}
	s.log.Info("ha: standby promoted", "pool", s.opts.Pool, "path", p.Path, "reason", reason, "epoch", st.Epoch, "seq", st.Seq, "restore", p.Restore)
	return p, nil
}

// checkInstalled checks the pool installed at Path: a sealed replica
// needs the key, a plain one must not be given one, and the offline
// checker must pass.
func (s *Standby) checkInstalled(st mirror.PoolStatus, h *Handoff) error {
	path := s.opts.Path
	sealed, err := recovery.IsSealedFile(path)
	switch {
	case err != nil:
		return fmt.Errorf("ha: promote: %w", err)
	case sealed && s.opts.Key == nil:
		return fmt.Errorf("ha: promote: the replica %s is sealed (encrypted) and the standby has no pool key: %w", st.Path, pmemgo.ErrBadKey)
	case !sealed && s.opts.Key != nil:
		return fmt.Errorf("ha: promote: the standby has a pool key and the replica %s is not sealed: %w", st.Path, pmemgo.ErrBadKey)
	case !sealed && h != nil && h.Sealed:
		return fmt.Errorf("ha: promote: the handoff is of a sealed pool and the replica %s is not sealed: %w", st.Path, pmemgo.ErrCorrupt)
	}
	return checkPool(path, s.opts.Key)
}

// checkSealedDigest checks, for a sealed pool just opened, that its open
// checked every line against an exact digest record, that the record
// came with the batch the replica says it holds (a record of another
// batch means the file was put back from another state), and that the
// lines are those the guardian saved.
func checkSealedDigest(hp *heap.Heap, st mirror.PoolStatus, h *Handoff) error {
	info, sealed := device.SealedDigestOf(hp.Device())
	switch {
	case !sealed:
		return nil
	case !info.Checked:
		return fmt.Errorf("ha: promote: the sealed replica %s has no exact digest record, so its lines cannot all be checked: %w", st.Path, pmemgo.ErrCorrupt)
	case info.Epoch != 0 && (info.Epoch != st.Epoch || info.Seq != st.Seq):
		return fmt.Errorf("ha: promote: the sealed replica %s holds the digest of batch %d of epoch %d, and its journal says batch %d of epoch %d: %w",
			st.Path, info.Seq, info.Epoch, st.Seq, st.Epoch, pmemgo.ErrCorrupt)
	case h != nil && h.Sealed && h.Aborted == "" && info.Found != h.Digest:
		return fmt.Errorf("ha: promote: the sealed replica %s does not hold the lines the guardian saved at batch %d of epoch %d (their digests differ): %w",
			st.Path, h.Seq, h.Epoch, pmemgo.ErrCorrupt)
	}
	return nil
}

// checkPool runs the offline checker, with key on a sealed pool: a pool
// that needs recovery passes, since opening it recovers it; any other
// problem fails it.
func checkPool(path string, key []byte) error {
	var problems []error
	yield := func(p recovery.Problem) bool {
		if !errors.Is(p.Err, pmemgo.ErrNeedsRecovery) {
			problems = append(problems, errors.New(p.String()))
		}
		return len(problems) < 10
	}
	var err error
	if key != nil {
		_, err = recovery.CheckSealedFile(path, key, nil, yield)
	} else {
		err = recovery.CheckFile(path, yield)
	}
	if err != nil {
		// The checker's error names the file.
		return fmt.Errorf("ha: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("ha: check %s: %w: %w", path, errors.Join(problems...), pmemgo.ErrCorrupt)
	}
	return nil
}

// installCopy copies from to a new file, then renames it to to.
func installCopy(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := to + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, to)
	}
	if err == nil {
		err = syncDir(filepath.Dir(to))
	}
	return err
}
