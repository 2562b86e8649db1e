package mirror

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pmemgo/pmemgo/mirror/wire"
	"github.com/pmemgo/pmemgo/recovery"
)

// ScrubResult is what verifying one replicated pool found.
type ScrubResult struct {
	// Pool is the pool's UUID in hex.
	Pool string `json:"pool"`
	// OK is set when the pool file passed: a valid header of this pool and
	// no problem found by the checker. A replica that holds no copy yet
	// passes.
	OK bool `json:"ok"`
	// Skipped is set when the pool was not verified: a primary was using
	// it, or it was set aside at start.
	Skipped bool `json:"skipped,omitempty"`
	// Problems are what failed, at most maxProblems of them.
	Problems []string `json:"problems,omitempty"`
}

// maxProblems bounds the problems reported per pool.
const maxProblems = 20

// checkPoolFile verifies a released pool file: its header is a valid one
// of the pool, and the checker finds no problem. It returns the problems.
func checkPoolFile(p *replicaPool) []string {
	path := p.poolPath()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []string{err.Error()}
	}
	fi, err := f.Stat()
	if err == nil {
		if err = validPoolSize(fi.Size()); err == nil {
			err = p.checkHeader(f, fi.Size())
		}
	}
	f.Close()
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	collect := func(pr recovery.Problem) bool {
		problems = append(problems, pr.String())
		return len(problems) < maxProblems
	}
	if sealed, serr := recovery.IsSealedFile(path); serr != nil {
		err = serr
	} else if sealed {
		// The server holds no key: it checks the sealed structure only.
		_, err = recovery.CheckSealedFile(path, nil, nil, collect)
	} else {
		err = recovery.CheckFile(path, collect)
	}
	if err != nil {
		problems = append(problems, err.Error())
	}
	return problems
}

// verify checks the pool file of an idle pool. A pool that fails is
// damaged: it is served as holding no known state, so that its next
// primary sends a whole copy over it.
func (s *Server) verify(e *poolEntry) []string {
	p := e.p
	var problems []string
	if p.damaged != nil {
		// A file of a size no pool has: only a snapshot replaces it.
		problems = []string{p.damaged.Error()}
	} else if problems = checkPoolFile(p); len(problems) > 0 {
		p.damaged = errors.New(strings.Join(problems, "; "))
	}
	if len(problems) == 0 {
		return nil
	}
	p.unknownPosition()
	s.log.Error("replica: pool file fails verification; the next primary will send a whole copy",
		"pool", p.name(), "problems", len(problems), "first", problems[0])
	e.state, e.lastErr = "damaged", "verification: "+p.damaged.Error()
	return problems
}

// Scrub verifies every pool no primary is using, as the server does at
// start: header and checker. A pool that fails is reported in Status as
// damaged and is sent a whole copy by its next primary. One scrub runs at
// a time: a call while another runs waits for it, and a scrub request
// from a peer is refused with ErrBusy.
func (s *Server) Scrub() []ScrubResult {
	s.scrubMu.Lock()
	defer s.scrubMu.Unlock()
	return s.scrubLocked()
}

// scrubLocked is Scrub, with scrubMu held.
func (s *Server) scrubLocked() []ScrubResult {
	s.mu.Lock()
	var entries []*poolEntry
	for _, e := range s.pools {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	out := make([]ScrubResult, 0, len(entries))
	for _, e := range entries {
		out = append(out, s.scrubOne(e))
	}
	slices.SortFunc(out, func(a, b ScrubResult) int { return strings.Compare(a.Pool, b.Pool) })
	return out
}

func (s *Server) scrubOne(e *poolEntry) ScrubResult {
	res := ScrubResult{Pool: e.p.name()}
	s.mu.Lock()
	if e.busy || e.failed != nil || s.closed {
		s.mu.Unlock()
		res.Skipped = true
		if e.failed != nil {
			res.Problems = []string{e.failed.Error()}
		}
		return res
	}
	e.busy, e.state, e.done = true, "scrub", make(chan struct{})
	s.mu.Unlock()
	res.Problems = s.verify(e)
	res.OK = len(res.Problems) == 0
	s.mu.Lock()
	e.busy = false
	e.state = e.idleState()
	e.epoch, e.seq = e.p.epoch, e.p.seq
	close(e.done)
	s.mu.Unlock()
	s.log.Info("replica: pool scrubbed", "pool", res.Pool, "ok", res.OK)
	return res
}

// QueryScrub asks the replica server at addr to verify its pools, over
// mutual TLS with cfg or, when cfg is nil, plain TCP.
func QueryScrub(ctx context.Context, addr string, cfg *tls.Config) ([]ScrubResult, error) {
	var res []ScrubResult
	err := query(ctx, addr, cfg, wire.TypeScrubRequest, wire.TypeScrubResult, 10*time.Minute, &res)
	if err != nil {
		return nil, fmt.Errorf("scrub of %s: %w", addr, err)
	}
	return res, nil
}

// ScrubDir verifies the pools of a replica directory that no server is
// running on, without changing anything.
func ScrubDir(dir string) ([]ScrubResult, error) {
	uuids, err := poolsIn(dir)
	if err != nil {
		return nil, err
	}
	out := make([]ScrubResult, 0, len(uuids))
	for _, u := range uuids {
		p := newReplicaPool(dir, u, nil)
		res := ScrubResult{Pool: p.name(), Problems: checkPoolFile(p)}
		res.OK = len(res.Problems) == 0
		out = append(out, res)
	}
	slices.SortFunc(out, func(a, b ScrubResult) int { return strings.Compare(a.Pool, b.Pool) })
	return out, nil
}

// ResetFencing gives the pool with the given UUID (in hex) in the replica
// directory dir, which no server is running on, a fresh fencing state: a
// primary of epoch seen or newer is accepted, and the next one sends a
// whole copy of the pool. It is how an operator brings back a pool whose
// fencing state was lost, whose history diverged, or that a jump of epoch
// beyond ServerOptions.MaxEpochJump locked.
func ResetFencing(dir, pool string, seen uint64) error {
	b, err := hex.DecodeString(pool)
	if err != nil || len(b) != 16 {
		return fmt.Errorf("pool %q: not a UUID of 32 hex digits", pool)
	}
	base := filepath.Join(dir, pool)
	if matches, _ := filepath.Glob(base + ".*"); len(matches) == 0 {
		return fmt.Errorf("no pool %s in %s: %w", pool, dir, os.ErrNotExist)
	}
	return resetFence(base, seen)
}
