package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// Mode chooses when a commit returns.
type Mode int

const (
	// Sync makes each commit return once Options.Acks replicas hold it
	// durably.
	Sync Mode = iota
	// Async lets commits return at once; replicas follow, their lag
	// bounded by Options.MaxLagBytes and MaxLagTime.
	Async
)

// String returns "sync" or "async".
func (m Mode) String() string {
	if m == Async {
		return "async"
	}
	return "sync"
}

// Options configures a Mirror.
type Options struct {
	// Replicas are the addresses (host:port) of the replica servers.
	Replicas []string
	// Mode is Sync or Async.
	Mode Mode
	// Acks is how many replicas must acknowledge a commit in sync mode
	// before it returns. Zero means one; it is at most len(Replicas).
	Acks int
	// AckTimeout bounds a sync commit's wait for acknowledgements. Zero
	// means 5 seconds.
	AckTimeout time.Duration
	// MaxLagBytes and MaxLagTime bound, in async mode, how far a
	// connected replica may fall behind: pool bytes captured or pending
	// that it has not acknowledged, and the age of the oldest commit it has
	// not acknowledged. A commit past either bound waits. Zero means 64 MiB
	// and 1 second.
	MaxLagBytes int64
	MaxLagTime  time.Duration
	// RetainBytes is how much of the recent batches is kept for replicas
	// that reconnect; one that needs older ones gets a snapshot. Zero means
	// 64 MiB.
	RetainBytes int64
	// FlushDelay is how long lines written back wait for a commit to
	// capture them before the mirror makes a commit boundary itself, when
	// a replica is waiting for them. Zero means 1 millisecond.
	FlushDelay time.Duration
	// Timeout bounds network waits: dialling, the handshake, a write, and
	// a replica's acknowledgement of what it was sent. Zero means 10
	// seconds.
	Timeout time.Duration
	// RetryInterval is the first wait before reconnecting to a replica; it
	// doubles up to 5 seconds. Zero means 100 milliseconds.
	RetryInterval time.Duration
	// Heartbeat is how long a connection to a replica may stay silent
	// before a ping is sent on it: replica servers end sessions that are
	// silent for their ServerOptions.IdleTimeout. Zero means 5 seconds.
	Heartbeat time.Duration
	// Dial connects to a replica; nil means a net.Dialer. With TLS, the
	// handshake runs over the connection it returns.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// TLS configures mutual TLS 1.3 with the replicas: RootCAs verify each
	// replica's certificate, for the host of its address unless ServerName
	// is set, and Certificates hold the primary's own certificate, whose
	// identity (common name) the replicas authorize.
	TLS *tls.Config
	// Insecure replicates over plain TCP instead, and logs a warning. One
	// of TLS and Insecure must be set.
	Insecure bool
	// Logger receives what the mirror does; nil discards it.
	Logger *slog.Logger
	// Metrics, if set, gets the mirror's Prometheus metrics.
	Metrics prometheus.Registerer
	// Base, if set, says which chunks of the pool a replica that holds a
	// given batch of an older incarnation lacks (package ha keeps such a
	// record for a guardian): that replica is sent only those, with the
	// chunks this mirror captured itself, instead of every chunk whose
	// hash differs from its copy's, which costs reading the whole pool on
	// both sides. Other replicas are sent snapshots as usual. The chunks
	// of a sealed pool are those of its sealed file.
	Base *Base
	// OnCapture, if set, is called with the sequence number of each batch
	// when it is captured, at its commit boundary under the heap's writer
	// lock, before any replica can be sent it: every line written back
	// before the call is in that batch or an earlier one.
	OnCapture func(seq uint64)
	// KeepBytes, in async mode, lets a batch be read by the goroutine
	// sending it, after later commits began, rather than at its commit
	// boundary on the committing goroutine: a commit that changes one of
	// its lines first keeps the old line (heap.Snapshot limited to the
	// batch's lines), up to KeepBytes of kept lines; past the bound, the
	// batch is read at once, before the line changes. Zero (the default)
	// reads every batch at its boundary, which measured faster here (see
	// the README); 16 MiB is a sensible bound.
	KeepBytes int64
	// Epoch, if set, is the epoch of this incarnation: a fencing token
	// from a coordinator (package ha), which must be above the pool's
	// epoch (heap.SetEpoch). Zero means the pool's epoch plus one
	// (heap.NewEpoch), for a primary without a coordinator.
	Epoch uint64
}

func (o *Options) setDefaults() error {
	if len(o.Replicas) == 0 {
		return errors.New("mirror: no replica")
	}
	for i, r := range o.Replicas {
		if slices.Contains(o.Replicas[:i], r) {
			return fmt.Errorf("mirror: replica %s listed twice", r)
		}
	}
	if o.Acks == 0 {
		o.Acks = 1
	}
	if o.Acks < 0 || o.Acks > len(o.Replicas) {
		return fmt.Errorf("mirror: %d acks required of %d replicas", o.Acks, len(o.Replicas))
	}
	setDefault(&o.AckTimeout, 5*time.Second)
	setDefault(&o.MaxLagBytes, 64<<20)
	setDefault(&o.MaxLagTime, time.Second)
	setDefault(&o.RetainBytes, 64<<20)
	setDefault(&o.FlushDelay, time.Millisecond)
	setDefault(&o.Timeout, 10*time.Second)
	setDefault(&o.RetryInterval, 100*time.Millisecond)
	setDefault(&o.Heartbeat, 5*time.Second)
	if o.Dial == nil {
		o.Dial = (&net.Dialer{}).DialContext
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o.secureDial()
}

// Base is what Options.Base describes.
type Base struct {
	// Epoch is the older incarnation: a replica that holds batch MinSeq
	// or a later one of it qualifies.
	Epoch, MinSeq uint64
	// Marks has, for each wire.HashChunk of the pool, the newest batch of
	// Epoch that changed the chunk, or math.MaxUint64 for a chunk that
	// may have changed since the last one: a replica that holds batch R
	// lacks the chunks whose mark is above R.
	Marks []uint64
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// maxCapture is the pool bytes at which pending lines are captured even if
// no replica is waiting, so that a batch stays of a size that a frame and
// a journal record hold comfortably.
const maxCapture = 64 << 20

// Mirror replicates a heap to replica servers. It starts a new epoch of
// the pool, tracks every line the device writes back and, at each commit
// boundary, ships what changed since the previous one as a batch that
// replicas apply atomically.
//
// Closing the heap closes the Mirror first: snapshots and batches are
// read from the pool's mapping.
type Mirror struct {
	h    *heap.Heap
	opts Options
	log  *slog.Logger
	// mem is what is replicated: the pool's mapping or, for a sealed pool,
	// the mapping of its sealed file.
	mem        []byte
	sealed     bool
	uuid       [16]byte
	epoch      uint64
	tracker    *Tracker
	cancelHook func()
	// cancelClose unregisters the heap's close hook.
	cancelClose func()
	metrics     *primaryMetrics
	unregister  func()
	// runs is scratch for captures, which happen one at a time under the
	// heap's writer lock; cut is scratch for encoding sealed batches,
	// which are always encoded there.
	runs []Run
	cut  []Run
	// encMu is held while a batch is read and encoded, which happens in
	// sequence order since each batch's chain value follows the one
	// before: chainer, chain (also under mu), bufs and offs are its.
	encMu   sync.Mutex
	chainer wire.Chainer
	bufs    [][]byte
	offs    []int64

	// ctx is cancelled by Close, ending dials in progress.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	done   chan struct{}
	// head is the newest batch captured, chain the chain value after the
	// newest one read (head, unless lazy is); cum the pool bytes captured.
	head  uint64
	chain wire.Chain
	cum   int64
	// lazy is the batch captured but not yet read, if any: always the
	// newest, and the only one.
	lazy     *batch
	hist     history
	sessions []*session
	// changed is closed, and replaced, when a replica acknowledges or a
	// session changes state.
	changed chan struct{}
	// capReq asks for a capture at the next commit boundary; capCh is
	// closed when it is set and replaced by the capture that serves it.
	capReq bool
	capCh  chan struct{}
	// pendingSince is when the oldest commit whose lines are not yet
	// captured ended.
	pendingSince time.Time
	// snapWant lists the sessions waiting for a snapshot, which the next
	// capture takes at its commit boundary.
	snapWant []snapWait
	// captured has a bit per wire.HashChunk that a batch of this mirror
	// changed, kept with Options.Base: a listed snapshot sends those too.
	captured []uint64
	wg       sync.WaitGroup
}

// Start starts replicating h. It makes this open of the pool a new
// incarnation (heap.NewEpoch, or heap.SetEpoch with Options.Epoch), so
// that replicas refuse any older primary of the same pool from then on,
// and connects to the replicas in the background: a replica that does not
// hold this incarnation's history is sent a snapshot first.
func Start(h *heap.Heap, opts Options) (*Mirror, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	// A sealed pool is replicated as its sealed file: batches carry
	// records, and replicas hold ciphertext they cannot read.
	dev, sealed := device.SealedFile(h.Device())
	if !sealed {
		dev = h.Device()
	}
	mem := dev.Bytes()
	uuid := h.UUID()
	var err error
	m := &Mirror{
		h: h, opts: opts, log: opts.Logger, mem: mem, uuid: uuid, sealed: sealed,
		metrics: newPrimaryMetrics(),
		done:    make(chan struct{}), changed: make(chan struct{}), capCh: make(chan struct{}),
		hist: history{limit: max(opts.RetainBytes, 1)},
	}
	m.metrics.lag = &lagCollector{m: m}
	if b := opts.Base; b != nil {
		n := chunks(int64(len(mem)))
		if b.Epoch == 0 || len(b.Marks) != n {
			return nil, fmt.Errorf("mirror: a base of epoch %d with %d chunk marks for a pool of %d chunks: %w", b.Epoch, len(b.Marks), n, pmemgo.ErrInvalidOptions)
		}
		m.captured = make([]uint64, (n+63)/64)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	// Track before the epoch changes, so that the header write is part of
	// the first batch.
	m.tracker = newGrowingTracker(dev, m.grown)
	m.tracker.Track(0, len(mem))
	if m.epoch, err = newEpoch(h, opts.Epoch); err != nil {
		m.tracker.Stop()
		m.cancel()
		return nil, fmt.Errorf("mirror: new epoch: %w", err)
	}
	if m.unregister, err = register(opts.Metrics, m.metrics.collectors()); err != nil {
		m.tracker.Stop()
		m.cancel()
		return nil, err
	}
	m.cancelHook = h.OnCommit(m.onCommit)
	// Closing the heap first closes the mirror, whose goroutines read the
	// pool's memory: they are done before it is unmapped.
	m.cancelClose = h.OnClose(func() {
		m.Close()
		m.wg.Wait()
	})
	for _, addr := range opts.Replicas {
		s := &session{m: m, addr: addr, wake: make(chan struct{}, 1)}
		m.sessions = append(m.sessions, s)
		m.wg.Add(1)
		go s.run()
	}
	m.wg.Add(1)
	go m.flusher()
	m.log.Info("mirror started", "pool", fmt.Sprintf("%x", uuid), "epoch", m.epoch, "mode", opts.Mode.String(), "replicas", opts.Replicas)
	return m, nil
}

// newEpoch makes the pool the incarnation numbered token, or the next one
// when token is zero.
func newEpoch(h *heap.Heap, token uint64) (uint64, error) {
	if token == 0 {
		return h.NewEpoch()
	}
	return token, h.SetEpoch(token)
}

// Epoch returns the epoch of this incarnation of the primary.
func (m *Mirror) Epoch() uint64 { return m.epoch }

// Acked returns the newest batch that every replica acknowledged in this
// epoch.
func (m *Mirror) Acked() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	acked := m.head
	for _, s := range m.sessions {
		acked = min(acked, s.acked)
	}
	return acked
}

// Seq returns the newest batch captured.
func (m *Mirror) Seq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.head
}

// Close stops replicating: connections are closed and commits no longer
// wait. It does not wait for replicas to catch up; Flush does. Closing the
// heap closes its mirror first.
func (m *Mirror) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.closed = true
	close(m.done)
	m.cancel()
	for _, s := range m.sessions {
		if s.conn != nil {
			s.conn.Close()
		}
	}
	m.mu.Unlock()
	m.cancelHook()
	m.cancelClose()
	m.tracker.Stop()
	m.wg.Wait()
	m.dropLazy()
	m.unregister()
	m.log.Info("mirror closed", "epoch", m.epoch, "seq", m.Seq())
	return nil
}

// Flush captures every line written back so far, at a commit boundary,
// and waits until every replica has acknowledged it, or ctx is done. A
// replica that refused this primary is not waited for, but its refusal is
// returned.
func (m *Mirror) Flush(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.requestCaptureLocked()
	m.mu.Unlock()
	if err := m.h.Update(func(*heap.Tx) error { return nil }); err != nil && !errors.Is(err, ErrAckTimeout) {
		return err
	}
	target := m.Seq()
	for {
		m.mu.Lock()
		behind, errs, refused := 0, []error(nil), []error(nil)
		for _, s := range m.sessions {
			switch {
			case s.state == stateRefused:
				refused = append(refused, fmt.Errorf("replica %s: %w", s.addr, s.err))
			case s.acked < target:
				behind++
				errs = append(errs, s.err)
			}
		}
		ch := m.changed
		m.mu.Unlock()
		if behind == 0 {
			return errors.Join(refused...)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("flush to batch %d: %d replicas behind: %w", target, behind, errors.Join(append(errs, ctx.Err())...))
		case <-m.done:
			return ErrClosed
		}
	}
}

// ReplicaStatus is what a Mirror knows of one replica.
type ReplicaStatus struct {
	Addr string
	// State is "connecting", "snapshot", "streaming" or "refused".
	State string
	// Epoch is the primary's epoch; Head its newest batch; Acked the
	// newest batch the replica acknowledged in this epoch.
	Epoch, Head, Acked uint64
	// LagBatches, LagBytes and LagTime are how far the replica is behind:
	// batches, pool bytes (captured or pending), and the age of the oldest
	// commit it has not acknowledged.
	LagBatches uint64
	LagBytes   int64
	LagTime    time.Duration
	// Snapshots is how many snapshots the replica was sent; SnapshotBytes
	// the pool bytes the last one carried: the whole pool, or for a delta
	// snapshot only the chunks that differed from the replica's copy.
	Snapshots     int
	SnapshotBytes int64
	// Listed is set when the last snapshot sent only the chunks that
	// Options.Base lists.
	Listed bool
	// Err is the error that ended the last connection, if any.
	Err error
}

// Status returns the state of each replica, in the order of
// Options.Replicas.
func (m *Mirror) Status() []ReplicaStatus {
	dirty := int64(m.tracker.DirtyBytes())
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ReplicaStatus, 0, len(m.sessions))
	for _, s := range m.sessions {
		st := ReplicaStatus{Addr: s.addr, State: s.state.String(), Epoch: m.epoch, Head: m.head, Acked: s.acked, Snapshots: s.snapshots, SnapshotBytes: s.snapBytes, Listed: s.listed, Err: s.err}
		st.LagBatches = m.head - min(s.acked, m.head)
		st.LagBytes, st.LagTime = m.lagLocked(s, now, dirty)
		out = append(out, st)
	}
	return out
}

// chunks returns the number of wire.HashChunk chunks of a pool of size
// bytes.
func chunks(size int64) int {
	return int((size + wire.HashChunk - 1) / wire.HashChunk)
}

// grown follows the pool's growth to size bytes, which happens under the
// heap's writer lock (an allocation's or Heap.Grow's), before any line of
// the new part is written back: the tracker tracks the new part already,
// and from now on batches are captured at the new size. A session whose
// replica holds a smaller copy reconnects before it sends such a batch
// (errGrown): its hello says the new size, and the replica grows its copy
// to it, in the same epoch, and resumes from the batches it holds.
func (m *Mirror) grown(size int) {
	m.encMu.Lock()
	m.mu.Lock()
	// Growth maps the new part right after the old one: the pool stays
	// at its address (device.Grower).
	m.mem = unsafe.Slice(unsafe.SliceData(m.mem), size)
	if m.captured != nil {
		m.captured = append(m.captured, make([]uint64, (chunks(int64(size))+63)/64-len(m.captured))...)
	}
	for _, s := range m.sessions {
		s.wakeUp()
	}
	m.mu.Unlock()
	m.encMu.Unlock()
	m.log.Info("mirror: the pool grew", "bytes", size)
}
