package mirror

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// ServerOptions configures a replica Server.
type ServerOptions struct {
	// Dir holds one pool file per replicated pool, named by the pool's
	// UUID, with its journal. It is created if missing.
	Dir string
	// Logger receives what the server does; nil discards it.
	Logger *slog.Logger
	// Metrics, if set, gets the server's Prometheus metrics.
	Metrics prometheus.Registerer
	// HandshakeTimeout bounds the TLS handshake and the wait for a
	// connection's first message. Zero means 10 seconds.
	HandshakeTimeout time.Duration
	// TLS configures mutual TLS 1.3: Certificates hold the server's own
	// certificate, and ClientCAs verify the certificates every peer must
	// present. The server requires TLS 1.3 and a verified client
	// certificate whatever the configuration says.
	TLS *tls.Config
	// Insecure serves over plain TCP instead, and logs a warning; Serve
	// then refuses a listener on every interface. One of TLS and Insecure
	// must be set.
	Insecure bool
	// Policy says which identities may act as primaries of which pools and
	// read the status; the zero Policy lets any certificate the CA signed
	// do both. It needs TLS.
	Policy Policy
	// IdleTimeout bounds, after hello, the wait for each message of a
	// primary and each write to it: a primary sends at least a ping every
	// Options.Heartbeat. Zero means 30 seconds.
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once; more are closed at
	// once. Zero means 256.
	MaxConns int
	// MaxPools bounds the pools the server keeps; a hello for a new pool
	// beyond it is refused. Zero means 1024.
	MaxPools int
	// MaxPoolSize bounds the size of a pool the server accepts. Zero means
	// 16 GiB.
	MaxPoolSize int64
	// MaxMemory bounds the memory that frames being received hold, over
	// all connections; a frame that does not fit ends its connection.
	// Zero means 1 GiB.
	MaxMemory int64
	// MaxEpochJump bounds how far a primary's epoch may be ahead of the
	// newest one seen for its pool: a primary starts a new epoch each time
	// it starts, so a larger jump is refused rather than let one hello
	// lock every real primary out. A pool the server has not seen yet
	// takes any epoch. pmemctl replica reset-fencing accepts a new epoch
	// on purpose. Zero means 65536.
	MaxEpochJump uint64
	// NoChunkHashes, if set, keeps the server from answering a primary of
	// a new epoch with the hashes of its copy's chunks, which confirm a
	// peer's guesses of whole chunks: every snapshot is then whole.
	NoChunkHashes bool
}

func (o *ServerOptions) setDefaults() {
	setDefault(&o.HandshakeTimeout, 10*time.Second)
	setDefault(&o.IdleTimeout, 30*time.Second)
	setDefault(&o.MaxConns, 256)
	setDefault(&o.MaxPools, 1024)
	setDefault(&o.MaxPoolSize, 16<<30)
	setDefault(&o.MaxMemory, 1<<30)
	setDefault(&o.MaxEpochJump, 1<<16)
}

// Server is a replica server: it accepts primaries and keeps, for each
// pool, a pool file that is always, once the server is stopped, a valid
// pool holding the primary's state at some commit.
type Server struct {
	opts       ServerOptions
	log        *slog.Logger
	metrics    *replicaMetrics
	unregister func()

	budget *budget
	done   chan struct{}
	// scrubMu is held by the scrub running, so that requests for scrubs
	// do not multiply the work.
	scrubMu sync.Mutex

	mu        sync.Mutex
	closed    bool
	pools     map[[16]byte]*poolEntry
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
	// applied, set by tests before Serve, is called with the pool file's
	// mapping after each batch is applied.
	applied func(seq uint64, mem []byte)
}

// poolEntry is a pool the server knows, with what Status reports of it.
// Fields are under Server.mu, except that p belongs to the session that
// has the pool busy: epoch, seq and seen are copies of its state for
// Status, published by that session.
type poolEntry struct {
	p                *replicaPool
	epoch, seq, seen uint64
	busy             bool
	// conn, sessionEpoch, identity and done are the busy session's
	// connection, epoch and peer identity (empty without TLS), and a
	// channel closed when it ends.
	conn         net.Conn
	sessionEpoch uint64
	identity     string
	done         chan struct{}
	state        string
	primary      string
	head         uint64
	lastErr      string
	lastTime     time.Time
	// failed is why the pool was set aside at start: it is not served.
	failed error
}

// PoolStatus is what a replica server reports about one pool.
type PoolStatus struct {
	// Pool is the pool's UUID in hex.
	Pool string `json:"pool"`
	// Path is the replica's pool file.
	Path string `json:"path"`
	// Epoch and Seq identify the state the pool file holds: the batch Seq
	// of the primary incarnation Epoch.
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
	// SeenEpoch is the newest epoch seen: older primaries are refused.
	SeenEpoch uint64 `json:"seen_epoch"`
	// Head is the primary's newest batch when it connected, or the newest
	// applied if later, and Lag how many batches the replica is behind
	// it: the lag of a catch-up. The primary's Mirror.Status has the lag
	// of a streaming replica.
	Head uint64 `json:"head"`
	Lag  uint64 `json:"lag"`
	// State is "idle" (no primary connected), "handshake", "connected"
	// (nothing received yet), "snapshot" (receiving a copy), "streaming",
	// "scrub" (being verified), "damaged" (idle, failed verification: the
	// next primary sends a whole copy) or "failed" (set aside at start, not
	// served: LastError says why).
	State string `json:"state"`
	// Primary is the connected primary's address.
	Primary string `json:"primary,omitempty"`
	// LastApplied is when a batch or snapshot was last made durable.
	LastApplied time.Time `json:"last_applied,omitzero"`
	// LastError is the error that ended the last session, if any.
	LastError string `json:"last_error,omitempty"`
}

// NewServer opens the replica directory and recovers every pool in it:
// what a crash interrupted is finished or discarded, so that every pool
// file is valid.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("replica server: no directory")
	}
	opts.setDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := opts.checkSecurity(log); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("replica server: %w", err)
	}
	s := &Server{
		opts: opts, log: log, metrics: newReplicaMetrics(), budget: &budget{limit: opts.MaxMemory}, done: make(chan struct{}),
		pools: map[[16]byte]*poolEntry{}, listeners: map[net.Listener]struct{}{}, conns: map[net.Conn]struct{}{},
	}
	uuids, err := poolsIn(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("replica server: %w", err)
	}
	for _, u := range uuids {
		s.pools[u] = s.recoverPool(u)
	}
	if s.unregister, err = register(opts.Metrics, s.metrics.collectors()); err != nil {
		return nil, err
	}
	return s, nil
}

// recoverPool recovers and verifies a pool found at start. A pool that
// fails to open is set aside and reported, so that the others are served;
// one that fails verification is served as holding no known state, so
// that its next primary sends a whole copy.
func (s *Server) recoverPool(u [16]byte) *poolEntry {
	p, err := openReplicaPool(s.opts.Dir, u, s.log)
	if err == nil {
		err = p.release()
	}
	if err != nil {
		s.log.Error("replica: pool set aside", "pool", hex.EncodeToString(u[:]), "err", err)
		p = newReplicaPool(s.opts.Dir, u, s.log)
		return &poolEntry{p: p, state: "failed", failed: err, lastErr: err.Error()}
	}
	e := &poolEntry{p: p, state: "idle"}
	s.verify(e)
	e.epoch, e.seq, e.seen = p.epoch, p.seq, p.seen
	s.metrics.applied.WithLabelValues(p.name()).Set(float64(p.seq))
	s.log.Info("replica recovered", "pool", p.name(), "epoch", p.epoch, "seq", p.seq, "seen_epoch", p.seen)
	return e
}

// poolsIn returns the UUIDs of the pools with files in dir.
func poolsIn(dir string) ([][16]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var uuids [][16]byte
	for _, e := range entries {
		name, _, _ := strings.Cut(e.Name(), ".")
		var u [16]byte
		if b, err := hex.DecodeString(name); err == nil && len(b) == 16 {
			copy(u[:], b)
			if !slices.Contains(uuids, u) {
				uuids = append(uuids, u)
			}
		}
	}
	return uuids, nil
}

// Serve accepts primaries on l until Close. It returns ErrClosed after
// Close, or the error that stopped accepting. Without TLS, a listener on
// every interface is closed and refused (ErrInsecure).
func (s *Server) Serve(l net.Listener) error {
	if err := s.checkListener(l); err != nil {
		l.Close()
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	s.log.Info("replica server listening", "addr", l.Addr().String(), "dir", s.opts.Dir)
	var wait time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.isClosed() {
				s.mu.Lock()
				delete(s.listeners, l)
				closed := s.closed
				s.mu.Unlock()
				if closed {
					return ErrClosed
				}
				return err
			}
			// Out of descriptors (EMFILE, ENFILE), memory or buffers, or
			// a connection aborted before it was accepted: none is a reason
			// to stop serving. Waiting lets sessions end and free what ran
			// out, as net/http does.
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			s.log.Warn("replica: accept failed; retrying", "err", err, "wait", wait)
			select {
			case <-time.After(wait):
			case <-s.done:
			}
			continue
		}
		wait = 0
		switch ok, full := s.track(c); {
		case !ok:
			c.Close()
			return ErrClosed
		case full:
			s.log.Warn("replica: connection refused: too many connections", "remote", c.RemoteAddr().String(), "max", s.opts.MaxConns)
			if s.opts.TLS == nil {
				// Over TLS the refusal is the closed connection: an error
				// frame would need a handshake, which is what the cap saves.
				sendError(c, limitError("the server serves %d connections at most", s.opts.MaxConns))
			}
			c.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(c)
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers c; ok is false once the server is closed, full when c
// would exceed MaxConns.
func (s *Server) track(c net.Conn) (ok, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, false
	}
	if len(s.conns) >= s.opts.MaxConns {
		return true, true
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true, false
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops accepting, ends every session and closes the pool files. A
// batch being applied is finished first, so the files are valid pools.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.done)
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.unregister()
	return s.closePools()
}

func (s *Server) closePools() error {
	var errs []error
	for _, e := range s.pools {
		errs = append(errs, e.p.release())
	}
	return errors.Join(errs...)
}

// Status returns the status of every pool, sorted by UUID.
func (s *Server) Status() []PoolStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []PoolStatus
	for _, e := range s.pools {
		p := e.p
		st := PoolStatus{
			Pool: p.name(), Path: p.poolPath(), Epoch: e.epoch, Seq: e.seq, SeenEpoch: e.seen,
			Head: max(e.head, e.seq), State: e.state, Primary: e.primary,
			LastApplied: e.lastTime, LastError: e.lastErr,
		}
		st.Lag = st.Head - st.Seq
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PoolStatus) int { return strings.Compare(a.Pool, b.Pool) })
	return out
}

// handle runs one connection: a status request, or a primary's session.
func (s *Server) handle(raw net.Conn) {
	c, id, err := s.secure(raw)
	if err != nil {
		s.log.Warn("replica: TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	r := wire.NewBudgetReader(c, s.budget)
	defer r.Close()
	c.SetReadDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	f, err := r.Next()
	if err != nil {
		if err != io.EOF {
			s.log.Warn("replica: bad first message", "remote", c.RemoteAddr().String(), "err", err)
			sendError(c, err)
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	if err := s.authorize(id, f); err != nil {
		s.log.Warn("replica: refused peer", "identity", id, "remote", c.RemoteAddr().String(), "request", f.Type.String(), "err", err)
		sendError(c, err)
		return
	}
	switch f.Type {
	case wire.TypeStatusRequest:
		body, _ := json.Marshal(s.Status())
		c.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
		c.Write(wire.AppendFrame(nil, wire.TypeStatus, 0, 0, body))
	case wire.TypeScrubRequest:
		if !s.scrubMu.TryLock() {
			sendError(c, fmt.Errorf("a scrub is running: %w", ErrBusy))
			return
		}
		res := s.scrubLocked()
		s.scrubMu.Unlock()
		body, _ := json.Marshal(res)
		c.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout))
		c.Write(wire.AppendFrame(nil, wire.TypeScrubResult, 0, 0, body))
	case wire.TypeHello:
		s.session(c, id, r, f)
	default:
		sendError(c, protocolError("%s message before hello", f.Type))
	}
}

// session serves a primary from its hello to the end of the connection;
// id is its identity (empty without TLS).
func (s *Server) session(c net.Conn, id string, r *wire.Reader, hello wire.Frame) {
	remote := c.RemoteAddr().String()
	h, err := wire.DecodeHello(hello.Payload)
	if err == nil {
		err = s.checkHello(h, hello.Epoch)
	}
	if err != nil {
		s.log.Warn("replica: refused hello", "pool", hex.EncodeToString(h.UUID[:]), "remote", remote, "err", err)
		sendError(c, err)
		return
	}
	e, err := s.acquire(h.UUID, hello.Epoch, c, id)
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, ErrStaleEpoch) {
			level = slog.LevelError
		}
		s.log.Log(context.Background(), level, "replica: refused primary", "pool", hex.EncodeToString(h.UUID[:]), "remote", remote, "err", err)
		sendError(c, err)
		return
	}
	rs := &replicaSession{s: s, c: c, r: r, e: e, p: e.p, epoch: hello.Epoch, head: hello.Seq, size: int64(h.Size), baseEpoch: h.BaseEpoch, baseSeq: h.BaseSeq}
	err = e.p.reopen()
	if err == nil {
		err = rs.run()
	}
	e.p.abort(rs.snap)
	if rerr := e.p.release(); rerr != nil && err == nil {
		err = rerr
	}
	seq := e.p.seq
	s.mu.Lock()
	e.busy, e.state, e.primary, e.conn = false, e.idleState(), "", nil
	e.epoch, e.seq, e.seen = e.p.epoch, e.p.seq, e.p.seen
	close(e.done)
	if err != nil {
		e.lastErr = err.Error()
	}
	s.mu.Unlock()
	switch {
	case err == nil:
		s.log.Info("replica: primary disconnected", "pool", e.p.name(), "remote", remote, "seq", seq)
	case errors.Is(err, ErrStaleEpoch), errors.Is(err, ErrDiverged):
		s.log.Error("replica: refused primary", "pool", e.p.name(), "remote", remote, "err", err)
		sendError(c, err)
	default:
		s.log.Warn("replica: session ended", "pool", e.p.name(), "remote", remote, "seq", seq, "err", err)
		sendError(c, err)
	}
}

// acquire returns the pool with the given UUID, opening it (for a new pool,
// with no files yet) and marking it busy with the session of conn, whose
// peer is id. A pool busy with a session of an older epoch is taken over:
// a newer primary exists, and the old one's connection may be dead
// without the server knowing yet, as when its machine failed. So is one
// busy with a session of the same epoch and the same TLS identity: only
// one primary holds an epoch, so that is the primary reconnecting after a
// failure the server has not noticed yet (without the takeover its sync
// commits would wait out the idle timeout); the batch chain checks where
// it resumes. A hello of the same epoch from another identity, or over
// plain TCP, where nobody's identity is known, is refused as busy.
func (s *Server) acquire(uuid [16]byte, epoch uint64, conn net.Conn, id string) (*poolEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return nil, ErrClosed
		}
		e := s.pools[uuid]
		if e == nil {
			if len(s.pools) >= s.opts.MaxPools {
				return nil, limitError("the server keeps %d pools at most", s.opts.MaxPools)
			}
			p, err := openReplicaPool(s.opts.Dir, uuid, s.log)
			if err == nil {
				err = p.release()
			}
			if err != nil {
				return nil, err
			}
			e = &poolEntry{p: p, state: "idle", epoch: p.epoch, seq: p.seq, seen: p.seen}
			s.pools[uuid] = e
		}
		if e.failed != nil {
			return nil, fmt.Errorf("pool %s was set aside at start (%v): %w", e.p.name(), e.failed, ErrUnavailable)
		}
		if epoch < e.seen {
			err := fmt.Errorf("pool %s: primary epoch %d is older than epoch %d, already seen: %w", e.p.name(), epoch, e.seen, ErrStaleEpoch)
			e.lastErr = err.Error()
			return nil, err
		}
		if e.seen > 0 && epoch-e.seen > s.opts.MaxEpochJump {
			err := limitError("pool %s: primary epoch %d is more than %d ahead of epoch %d, the newest seen (pmemctl replica reset-fencing accepts it)",
				e.p.name(), epoch, s.opts.MaxEpochJump, e.seen)
			e.lastErr = err.Error()
			return nil, err
		}
		if !e.busy {
			e.busy, e.state, e.primary, e.lastErr = true, "handshake", conn.RemoteAddr().String(), ""
			e.conn, e.sessionEpoch, e.identity, e.done = conn, epoch, id, make(chan struct{})
			return e, nil
		}
		if e.conn == nil {
			return nil, fmt.Errorf("pool %s is being %s: %w", e.p.name(), e.state, ErrBusy)
		}
		reconnect := epoch == e.sessionEpoch && id != "" && id == e.identity
		if epoch < e.sessionEpoch || (epoch == e.sessionEpoch && !reconnect) {
			return nil, fmt.Errorf("pool %s: primary %s of epoch %d is connected: %w", e.p.name(), e.primary, e.sessionEpoch, ErrBusy)
		}
		s.log.Warn("replica: new connection takes over the pool", "pool", e.p.name(), "old", e.primary, "new", conn.RemoteAddr().String(),
			"reconnect", reconnect)
		e.conn.Close()
		done := e.done
		s.mu.Unlock()
		<-done
		s.mu.Lock()
	}
}

// sendError tells the peer why the connection is closing, as far as it
// still listens.
func sendError(c net.Conn, err error) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(wire.AppendFrame(nil, wire.TypeError, 0, 0, wire.AppendError(nil, wire.Error{Code: errorCode(err), Message: err.Error()})))
}
