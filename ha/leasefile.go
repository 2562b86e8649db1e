package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
)

// LeaseFileOptions configures a LeaseFile coordinator.
type LeaseFileOptions struct {
	// TTL is how long a grant or renewal holds. Zero means 2 seconds.
	TTL time.Duration
	// Margin is how long before the lease's end its holder stops
	// committing: it covers a commit in flight when the term's validity
	// runs out. Zero means TTL/4.
	Margin time.Duration
	// Poll is how often a campaign looks at the lease again, and how
	// often the holder renews is TTL/4. Zero means TTL/20, at least 5ms.
	Poll time.Duration
}

// LeaseFile is the coordinator of the processes of one machine: for each
// pool, a lease file in a directory beside the pools records the holder,
// when its lease ends and the last token granted; an advisory lock
// (flock) on a companion file orders the candidates' reads and writes.
// Each grant bumps the token. A holder whose process is gone (the file
// records its PID) is replaced at once, without waiting for its lease.
type LeaseFile struct {
	dir  string
	opts LeaseFileOptions
	pid  int

	terms termSet
}

// leaseState is the content of a pool's lease file.
type leaseState struct {
	Token uint64 `json:"token"`
	// Epoch is the newest incarnation registered (Term.Register).
	Epoch   uint64 `json:"epoch,omitempty"`
	Node    string `json:"node,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Expires int64  `json:"expires_unix_nano,omitempty"`
}

// NewLeaseFile returns the coordinator whose lease files are in dir.
func NewLeaseFile(dir string, opts LeaseFileOptions) (*LeaseFile, error) {
	if opts.TTL == 0 {
		opts.TTL = 2 * time.Second
	}
	if opts.Margin == 0 {
		opts.Margin = opts.TTL / 4
	}
	if opts.Poll == 0 {
		opts.Poll = max(opts.TTL/20, 5*time.Millisecond)
	}
	if opts.TTL < 0 || opts.Margin < 0 || opts.Margin >= opts.TTL || opts.Poll < 0 {
		return nil, fmt.Errorf("ha: lease TTL %v, margin %v, poll %v: want 0 <= margin < TTL: %w", opts.TTL, opts.Margin, opts.Poll, pmemgo.ErrInvalidOptions)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ha: lease directory: %w", err)
	}
	return &LeaseFile{dir: dir, opts: opts, pid: os.Getpid()}, nil
}

func (c *LeaseFile) statePath(pool string) string {
	return filepath.Join(c.dir, pool+".lease")
}

// locked runs fn with the pool's lock held, on the lease file's state,
// and writes the state back, durably, when fn says it changed.
func (c *LeaseFile) locked(pool string, fn func(s *leaseState) (changed bool, err error)) error {
	lf, err := os.OpenFile(c.statePath(pool)+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("ha: lease lock: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("ha: lease lock %s: %w", lf.Name(), err)
	}
	var s leaseState
	b, err := os.ReadFile(c.statePath(pool))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("ha: lease file: %w", err)
	default:
		if err := json.Unmarshal(b, &s); err != nil {
			// A token that could go back would let an old primary in:
			// a damaged file is not silently restarted from zero.
			return fmt.Errorf("ha: lease file %s: %v: %w", c.statePath(pool), err, pmemgo.ErrCorrupt)
		}
	}
	changed, err := fn(&s)
	if err != nil || !changed {
		return err
	}
	return writeFileDurably(c.statePath(pool), s)
}

// writeFileDurably replaces path with v's JSON by a rename, so that a
// reader sees the old state or the new one, never a mix.
func writeFileDurably(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("ha: lease file: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("ha: lease file %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// holderGone reports whether the lease's holder is a process of this
// machine that no longer runs.
func holderGone(s *leaseState) bool {
	if s.PID <= 0 {
		return false
	}
	return errors.Is(unix.Kill(s.PID, 0), unix.ESRCH)
}

// Campaign waits until c.Node holds the lease of c.Pool: it is free,
// ran out, or its holder's process is gone. Its token is one more than
// the last granted, and above c.MinToken.
func (c *LeaseFile) Campaign(ctx context.Context, cand Candidate) (*Term, error) {
	if err := checkPoolName(cand.Pool); err != nil {
		return nil, err
	}
	for {
		if err := c.checkOpen(); err != nil {
			return nil, err
		}
		start := time.Now()
		var token, incarnation uint64
		err := c.locked(cand.Pool, func(s *leaseState) (bool, error) {
			if s.Node != "" && start.UnixNano() < s.Expires && !holderGone(s) {
				return false, nil
			}
			s.Token = max(s.Token, cand.MinToken) + 1
			s.Node, s.PID, s.Expires = cand.Node, c.pid, start.Add(c.opts.TTL).UnixNano()
			token, incarnation = s.Token, s.Epoch
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		if token != 0 {
			return c.startTerm(cand, token, incarnation, start), nil
		}
		select {
		case <-ctx.Done():
			return nil, c.notPrimary(ctx, cand)
		case <-time.After(c.opts.Poll):
		}
	}
}

// notPrimary says who holds the role a campaign did not get.
func (c *LeaseFile) notPrimary(ctx context.Context, cand Candidate) error {
	l, err := c.Leader(context.Background(), cand.Pool)
	if err != nil {
		return fmt.Errorf("ha: pool %s: %s not elected: %w", cand.Pool, cand.Node, ctx.Err())
	}
	return fmt.Errorf("ha: pool %s: %s not elected, %s holds token %d: %w: %w", cand.Pool, cand.Node, l.Node, l.Token, pmemgo.ErrFenced, ctx.Err())
}

func (c *LeaseFile) checkOpen() error {
	if c.terms.isClosed() {
		return errors.New("ha: lease file coordinator closed")
	}
	return nil
}

// startTerm returns the term granted at start and renews it in the
// background.
func (c *LeaseFile) startTerm(cand Candidate, token, incarnation uint64, start time.Time) *Term {
	t := newTerm(cand, token, start.Add(c.opts.TTL-c.opts.Margin))
	t.Incarnation = incarnation
	t.register = func(context.Context) error {
		return c.locked(cand.Pool, func(s *leaseState) (bool, error) {
			if s.Token != token || s.Node != cand.Node {
				return false, fmt.Errorf("ha: pool %s: register token %d: lease taken, %s holds token %d: %w", cand.Pool, token, s.Node, s.Token, pmemgo.ErrFenced)
			}
			s.Epoch = token
			return true, nil
		})
	}
	stop := make(chan struct{})
	t.stop = func() { close(stop) }
	t.resign = func(context.Context) error { return c.resign(cand.Pool, token) }
	c.terms.run(t, c.opts.TTL/4, stop, func(start time.Time) { c.renew(t, start) }, nil)
	return t
}

// renew renews t's lease once, every TTL/4 (termSet.run). A lease another
// node took ends the term; any other error is retried at the next tick,
// until the term's validity runs out.
func (c *LeaseFile) renew(t *Term, start time.Time) {
	err := c.locked(t.Pool, func(s *leaseState) (bool, error) {
		if s.Token != t.Token || s.Node != t.Node {
			return false, fmt.Errorf("lease taken: %s holds token %d: %w", s.Node, s.Token, pmemgo.ErrFenced)
		}
		s.Expires = start.Add(c.opts.TTL).UnixNano()
		return true, nil
	})
	if errors.Is(err, pmemgo.ErrFenced) {
		t.end(err)
	} else if err == nil {
		t.renewed(start.Add(c.opts.TTL - c.opts.Margin))
	}
}

// resign frees the pool's lease if token still holds it.
func (c *LeaseFile) resign(pool string, token uint64) error {
	return c.locked(pool, func(s *leaseState) (bool, error) {
		if s.Token != token || s.Node == "" {
			return false, nil
		}
		s.Node, s.PID, s.Expires = "", 0, 0
		return true, nil
	})
}

// Leader returns the holder of pool's lease, unless it ran out.
func (c *LeaseFile) Leader(_ context.Context, pool string) (Leader, error) {
	if err := checkPoolName(pool); err != nil {
		return Leader{}, err
	}
	var l Leader
	err := c.locked(pool, func(s *leaseState) (bool, error) {
		if s.Node != "" && time.Now().UnixNano() < s.Expires && !holderGone(s) {
			l = Leader{Node: s.Node, Token: s.Token, Expires: time.Unix(0, s.Expires)}
		}
		return false, nil
	})
	if err != nil {
		return Leader{}, err
	}
	if l.Node == "" {
		return Leader{}, fmt.Errorf("pool %s: %w", pool, ErrNoLeader)
	}
	return l, nil
}

// Close stops renewing the coordinator's terms and ends them: their
// heaps are fenced, and their leases run out.
func (c *LeaseFile) Close() error {
	c.terms.close()
	return nil
}
