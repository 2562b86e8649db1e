package ha

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/mirror"
)

// StatusOptions says what Status asks about a pool.
type StatusOptions struct {
	// Pool names the pool in the coordinator; Coordinator says who is
	// primary.
	Pool        string
	Coordinator Coordinator
	// Standbys are the addresses of standbys' replica servers, asked for
	// the replicas they hold over mutual TLS with TLS (as
	// mirror.QueryStatus; nil for servers run with Insecure).
	Standbys []string
	TLS      *tls.Config
	// StandbyDir, if set, is the replica directory of a standby on this
	// machine, whose last promotion and handoff are reported.
	StandbyDir string
}

// StatusReport is what Status finds.
type StatusReport struct {
	Pool string `json:"pool"`
	// Primary is the current primary and its token, the epoch its
	// replicas know it by; nil when the pool has none.
	Primary *Leader `json:"primary"`
	// Standbys are what each standby asked holds, in the order of
	// StatusOptions.Standbys.
	Standbys []StandbyStatus `json:"standbys,omitempty"`
	// Promotion is the last promotion of the standby of StatusOptions.
	// StandbyDir, nil when it has not promoted.
	Promotion *Promotion `json:"promotion,omitempty"`
	// LastHandoff is the handoff that promotion accepted, nil when there
	// was none (the standby promoted from its last complete state).
	LastHandoff *HandoffStatus `json:"last_handoff,omitempty"`
}

// StandbyStatus is what one standby's replica server holds.
type StandbyStatus struct {
	Addr string `json:"addr"`
	// Pools are its replicas: the batch each holds, of which epoch, and
	// how many batches it is behind the primary it last heard of.
	Pools []mirror.PoolStatus `json:"pools,omitempty"`
	// Current is set when a replica holds the current primary's epoch:
	// it is that primary's replica rather than an older one's.
	Current bool `json:"current"`
	// Error says why the standby could not be asked.
	Error string `json:"error,omitempty"`
}

// HandoffStatus is the last handoff a standby accepted.
type HandoffStatus struct {
	// At is when the standby promoted on it.
	At time.Time `json:"at"`
	// Bytes is what the guardian shipped, Save how long the save took,
	// from its start to the handoff.
	Bytes int64         `json:"bytes"`
	Save  time.Duration `json:"save_ns"`
	// Epoch and Seq are the batch the standby installed.
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// Status reports the pool's primary, its standbys and their lag, and the
// last handoff: what 'pmemctl ha status' prints. An error of the
// coordinator, or an unreadable promotion record, is returned; a standby
// that cannot be asked is reported in its StandbyStatus.Error, the rest
// of the report standing.
func Status(ctx context.Context, opts StatusOptions) (StatusReport, error) {
	rep := StatusReport{Pool: opts.Pool}
	if err := checkPoolName(opts.Pool); err != nil {
		return rep, err
	}
	if opts.Coordinator == nil {
		return rep, fmt.Errorf("ha: status of pool %s: no coordinator: %w", opts.Pool, pmemgo.ErrInvalidOptions)
	}
	l, err := opts.Coordinator.Leader(ctx, opts.Pool)
	switch {
	case err == nil:
		rep.Primary = &l
	case !errors.Is(err, ErrNoLeader):
		return rep, fmt.Errorf("ha: status of pool %s: %w", opts.Pool, err)
	}
	for _, addr := range opts.Standbys {
		s := StandbyStatus{Addr: addr}
		if s.Pools, err = mirror.QueryStatus(ctx, addr, opts.TLS); err != nil {
			s.Error = err.Error()
		}
		for _, p := range s.Pools {
			s.Current = s.Current || rep.Primary != nil && p.Epoch == rep.Primary.Token
		}
		rep.Standbys = append(rep.Standbys, s)
	}
	if opts.StandbyDir != "" {
		p, err := ReadPromotion(opts.StandbyDir)
		switch {
		case err == nil:
			rep.Promotion = &p
			if h := p.Handoff; h != nil && h.Aborted == "" {
				rep.LastHandoff = &HandoffStatus{At: p.At, Bytes: h.Bytes, Save: h.Save, Epoch: h.Epoch, Seq: h.Seq}
			}
		case !errors.Is(err, os.ErrNotExist):
			return rep, err
		}
	}
	return rep, nil
}
