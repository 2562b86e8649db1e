package mirror

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// sessionState is where a replica's session stands.
type sessionState int

const (
	stateConnecting sessionState = iota
	stateSnapshot
	stateStreaming
	stateRefused
)

func (s sessionState) String() string {
	return [...]string{"connecting", "snapshot", "streaming", "refused"}[s]
}

const (
	// snapChunk is the pool bytes a snapshot frame carries.
	snapChunk = 1 << 20
	// maxWrite bounds the frames gathered into one write.
	maxWrite = 4 << 20
)

// errHistoryGone ends a session whose replica needs a batch no longer
// held; it reconnects and gets a snapshot.
var errHistoryGone = errors.New("batch no longer held for catch-up")

// errGrown ends a session whose replica holds a copy smaller than the
// pool has grown to: it reconnects at once, and its hello, which says the
// new size, has the replica grow its copy before the batches that write
// the new part.
var errGrown = errors.New("the pool grew")

// session is the primary's side of one replica: it connects, catches the
// replica up and streams batches, reconnecting after failures.
type session struct {
	m    *Mirror
	addr string
	// wake is signalled when a batch is captured.
	wake chan struct{}

	// Under m.mu:
	state sessionState
	conn  net.Conn
	// acked is the newest batch the replica acknowledged in this epoch;
	// ackedCum the pool bytes captured up to it.
	acked    uint64
	ackedCum int64
	// next is the next batch to send, sent the last one sent, need the
	// oldest one the replica may still be sent.
	next, sent, need uint64
	// writing is held by whoever writes to the connection: the session's
	// goroutine, or a sync commit writing its batch directly. It keeps
	// frames in sequence.
	writing bool
	err     error
	// snapshots counts the snapshots sent; snapBytes is the pool bytes
	// the last one carried (less than the pool for a delta snapshot).
	snapshots int
	snapBytes int64
	// listed is set when the last snapshot was a listed one.
	listed bool
	// helloSize is the pool size the last hello said: the replica's copy
	// is that large.
	helloSize int64
}

func (s *session) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run connects to the replica and serves it until the mirror closes or
// the replica refuses this primary.
func (s *session) run() {
	m := s.m
	defer m.wg.Done()
	wait := m.opts.RetryInterval
	for {
		streamed, err := s.connect()
		refused := errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrDiverged)
		m.mu.Lock()
		closed := m.closed
		s.conn, s.err = nil, err
		s.state = stateConnecting
		if refused {
			s.state = stateRefused
		}
		m.signalLocked()
		m.mu.Unlock()
		switch {
		case closed:
			return
		case refused:
			m.log.Error("mirror: replica refused this primary", "replica", s.addr, "epoch", m.epoch, "err", err)
			return
		case errors.Is(err, errGrown):
			m.log.Info("mirror: the pool grew; reconnecting so that the replica grows its copy", "replica", s.addr)
			continue
		}
		m.log.Warn("mirror: replica disconnected", "replica", s.addr, "err", err)
		if streamed {
			wait = m.opts.RetryInterval
		}
		select {
		case <-time.After(wait):
		case <-m.done:
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// connect runs one connection. streamed reports whether the replica got as
// far as streaming.
func (s *session) connect() (streamed bool, err error) {
	m := s.m
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	conn, err := m.opts.Dial(ctx, "tcp", s.addr)
	cancel()
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		conn.Close()
		return false, ErrClosed
	}
	s.conn = conn
	head := m.head
	s.helloSize = int64(len(m.mem))
	size := s.helloSize
	m.mu.Unlock()
	defer conn.Close()

	r := wire.NewReader(conn)
	ready, err := s.handshake(conn, r, head, size)
	if err != nil {
		return false, err
	}
	var rerr error
	readerDone := make(chan struct{})
	go func() {
		rerr = s.readAcks(conn, r)
		conn.Close()
		close(readerDone)
	}()
	err = s.serve(conn, ready, readerDone)
	conn.Close()
	<-readerDone
	m.mu.Lock()
	streamed = s.state == stateStreaming
	m.mu.Unlock()
	// The reader's error is the cause when the peer reported one; the
	// writer then only saw the connection close.
	var remote *RemoteError
	if errors.As(rerr, &remote) || err == nil || errors.Is(err, net.ErrClosed) {
		err = rerr
	}
	return streamed, err
}

// handshake says hello and reads the replica's answer.
func (s *session) handshake(conn net.Conn, r *wire.Reader, head uint64, size int64) (wire.Frame, error) {
	m := s.m
	conn.SetDeadline(time.Now().Add(m.opts.Timeout))
	h := wire.Hello{UUID: m.uuid, Size: uint64(size)}
	if b := m.opts.Base; b != nil {
		h.BaseEpoch, h.BaseSeq = b.Epoch, b.MinSeq
	}
	hello := wire.AppendFrame(nil, wire.TypeHello, m.epoch, head, wire.AppendHello(nil, h))
	if _, err := conn.Write(hello); err != nil {
		return wire.Frame{}, err
	}
	f, err := r.Next()
	if err != nil {
		return wire.Frame{}, fmt.Errorf("handshake: %w", err)
	}
	switch f.Type {
	case wire.TypeError:
		return wire.Frame{}, remoteError(f)
	case wire.TypeReady:
		if _, err := wire.DecodeReady(f.Payload); err != nil {
			return wire.Frame{}, err
		}
	default:
		return wire.Frame{}, protocolError("%s message in answer to hello", f.Type)
	}
	conn.SetDeadline(time.Time{})
	return f, nil
}

func remoteError(f wire.Frame) error {
	e, err := wire.DecodeError(f.Payload)
	if err != nil {
		return err
	}
	return &RemoteError{Code: e.Code, Message: e.Message}
}

// serve brings the replica up to date, by resending retained batches or
// by a snapshot, then streams batches as they are captured. A replica of
// this epoch resumes only where its chain value is this primary's: a
// replica that holds a batch this primary did not make has diverged, and
// is refused, with an error sent to it too.
func (s *session) serve(conn net.Conn, ready wire.Frame, readerDone <-chan struct{}) error {
	m := s.m
	r, err := wire.DecodeReady(ready.Payload)
	if err != nil {
		return err
	}
	m.mu.Lock()
	resume, diverged := false, error(nil)
	if ready.Epoch == m.epoch {
		chain, known := m.chainAtLocked(ready.Seq)
		switch {
		case ready.Seq > m.head:
			diverged = divergedError("replica %s holds batch %d of epoch %d, this primary made batches up to %d", s.addr, ready.Seq, m.epoch, m.head)
		case known && chain.Tag() != r.ChainTag:
			diverged = divergedError("replica %s holds a batch %d of epoch %d that is not this primary's: the chain values differ",
				s.addr, ready.Seq, m.epoch)
		case known && (ready.Seq == m.head || m.hist.get(ready.Seq+1) != nil):
			resume = true
		}
	}
	if resume {
		s.state = stateStreaming
		s.acked, s.ackedCum = ready.Seq, m.cumLocked(ready.Seq)
		s.sent, s.next, s.need = ready.Seq, ready.Seq+1, ready.Seq+1
		m.signalLocked()
	}
	m.mu.Unlock()
	if diverged != nil {
		sendError(conn, diverged)
		return diverged
	}
	m.log.Info("mirror: replica connected", "replica", s.addr, "replica_epoch", ready.Epoch,
		"replica_seq", ready.Seq, "resume", resume)
	if !resume {
		// A replica that holds the base lacks only the chunks listed.
		var base *wire.Ready
		// A base describes the pool at its size: after a growth, the
		// replica gets a snapshot that is not listed.
		if b := m.opts.Base; b != nil && ready.Epoch == b.Epoch && ready.Seq >= b.MinSeq && len(r.Hashes) == 0 &&
			len(b.Marks) == chunks(s.helloSize) {
			base = &r
		}
		if err := s.sendSnapshot(conn, r.Hashes, base, ready.Seq); err != nil {
			return err
		}
	}
	return s.stream(conn, readerDone)
}

// chainAtLocked returns the chain value after batch seq of this epoch, if
// it is still known.
func (m *Mirror) chainAtLocked(seq uint64) (wire.Chain, bool) {
	if b := m.hist.get(seq); b != nil {
		// A batch not read yet has no chain value yet.
		return b.chain, b.snap == nil
	}
	if seq == m.head {
		return m.chain, true
	}
	if b := m.hist.get(seq + 1); b != nil && b.snap == nil {
		return b.prev, true
	}
	return wire.Chain{}, false
}

// sendSnapshot sends a copy of the whole pool, read from a heap snapshot
// taken at the commit boundary of a capture (batch base): a consistent
// image of that commit, however commits go on while it is sent. The
// replica installs it once it has applied the next batch
// (SnapEnd.ConsistentAt), as the protocol wants every snapshot to end on
// a batch; no batch captured during the copy needs replaying.
//
// When the replica sent the hashes of its own copy's chunks, the snapshot
// is a delta: the replica starts from its copy, and only the chunks whose
// content in the snapshot differs are sent. When it holds the base of
// Options.Base instead (listed is set, and it holds batch held of that
// incarnation), only the chunks marked after that batch and those this
// mirror captured are sent, and the rest of the pool is not read.
func (s *session) sendSnapshot(conn net.Conn, hashes []wire.ChunkHash, listed *wire.Ready, held uint64) error {
	m := s.m
	ch := make(chan snapTaken, 1)
	m.mu.Lock()
	m.snapWant = append(m.snapWant, snapWait{s: s, ch: ch})
	m.requestCaptureLocked()
	m.mu.Unlock()
	var taken snapTaken
	select {
	case taken = <-ch:
	case <-m.done:
		return ErrClosed
	}
	if taken.err != nil {
		return fmt.Errorf("snapshot of the pool: %w", taken.err)
	}
	snap := taken.snap
	defer snap.Close()
	img, size := taken.img, int(taken.size)
	if taken.size != s.helloSize {
		// The pool grew since the hello: the replica's copy is too small.
		return errGrown
	}
	if m.sealed {
		hashes = nil
	}
	base, chain := taken.base, taken.chain
	start := time.Now()
	m.log.Info("mirror: sending snapshot", "replica", s.addr, "after_batch", base, "bytes", size, "listed", listed != nil)

	// A replica of a pool that grew since sent the hashes of its smaller
	// copy: the chunks past it are sent whole.
	delta := len(hashes) > 0 && len(hashes) <= chunks(taken.size)
	var send []bool
	if listed != nil {
		send = m.listedChunks(held)
		delta = true
	}
	buf := wire.AppendFrame(nil, wire.TypeSnapBegin, m.epoch, base, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: m.uuid, Size: uint64(size), Delta: delta, Listed: listed != nil, Chain: chain}))
	if err := s.write(conn, buf); err != nil {
		return err
	}
	step := snapChunk
	if delta {
		step = wire.HashChunk
	}
	var sent int64
	buf = make([]byte, 0, wire.HeaderSize+8+snapChunk)
	chunk := make([]byte, step)
	for off := 0; off < size; off += step {
		if send != nil && !send[off/step] {
			continue
		}
		end := min(off+step, size)
		data := chunk[:end-off]
		if _, err := img.ReadAt(data, int64(off)); err != nil {
			return fmt.Errorf("snapshot of the pool: %w", err)
		}
		if send == nil && delta && off/step < len(hashes) && wire.HashChunkOf(data) == hashes[off/step] {
			continue
		}
		f := wire.BeginFrame(buf[:0], wire.TypeSnapChunk, m.epoch, base)
		f = wire.AppendSnapChunkHeader(f, uint64(off))
		f = append(f, data...)
		wire.FinishFrame(f)
		if err := s.write(conn, f); err != nil {
			return err
		}
		sent += int64(end - off)
	}
	m.mu.Lock()
	s.snapBytes = sent
	s.listed = listed != nil
	m.mu.Unlock()
	m.mu.Lock()
	at := base + 1
	if m.head < at {
		m.requestCaptureLocked()
	}
	m.mu.Unlock()
	end := wire.AppendFrame(nil, wire.TypeSnapEnd, m.epoch, base, wire.AppendSnapEnd(nil, wire.SnapEnd{ConsistentAt: at}))
	if err := s.write(conn, end); err != nil {
		return err
	}
	m.log.Info("mirror: snapshot sent", "replica", s.addr, "consistent_at", at, "delta", delta, "listed", listed != nil, "bytes", sent, "took", time.Since(start))
	return nil
}

// listedChunks returns, for each chunk, whether a listed snapshot sends
// it to a replica that holds batch held of the base: it changed after
// that batch, or a batch of this mirror changed it. The snapshot is taken
// after every batch marked so far, so none it needs is missed.
func (m *Mirror) listedChunks(held uint64) []bool {
	send := make([]bool, len(m.opts.Base.Marks))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, mark := range m.opts.Base.Marks {
		send[i] = mark > held || m.captured[i/64]&(1<<(i%64)) != 0
	}
	return send
}

func (s *session) write(conn net.Conn, b []byte) error {
	select {
	case <-s.m.done:
		return ErrClosed
	default:
	}
	conn.SetWriteDeadline(time.Now().Add(s.m.opts.Timeout))
	_, err := conn.Write(b)
	return err
}

// stream sends the batches after the last one sent as they are captured,
// several to a write when the replica is behind.
func (s *session) stream(conn net.Conn, readerDone <-chan struct{}) error {
	m := s.m
	var frames [][]byte
	var taken []*batch
	heartbeat := time.NewTicker(m.opts.Heartbeat)
	defer heartbeat.Stop()
	for {
		m.mu.Lock()
		for s.next > m.head || s.writing {
			if m.opts.Mode == Async && !s.writing && m.tracker.DirtyBytes() > 0 {
				// Lines are waiting for a commit boundary to be captured at.
				m.requestCaptureLocked()
			}
			m.mu.Unlock()
			select {
			case <-s.wake:
			case <-readerDone:
				return net.ErrClosed
			case <-m.done:
				return ErrClosed
			case <-heartbeat.C:
				if err := s.ping(conn); err != nil {
					return err
				}
			}
			m.mu.Lock()
		}
		frames, taken = frames[:0], taken[:0]
		size := 0
		for s.next <= m.head && size < maxWrite {
			b := m.hist.get(s.next)
			if b == nil {
				for _, t := range taken {
					t.done()
				}
				m.mu.Unlock()
				return fmt.Errorf("batch %d: %w", s.next, errHistoryGone)
			}
			if b.size > s.helloSize {
				// The batch may write where the replica's copy does not
				// reach: what is taken goes first, then the session
				// reconnects (errGrown).
				if len(taken) > 0 {
					break
				}
				m.mu.Unlock()
				return fmt.Errorf("batch %d of a pool of %d bytes, the replica's copy %d: %w", s.next, b.size, s.helloSize, errGrown)
			}
			if b.snap != nil {
				// Captured but not read: read it now, off the commits'
				// path, after sending what is taken already.
				if len(taken) > 0 {
					break
				}
				m.mu.Unlock()
				m.readBatch()
				m.mu.Lock()
				continue
			}
			frames = append(frames, b.take())
			taken = append(taken, b)
			size += len(b.frame)
			s.next++
		}
		s.claimLocked(conn)
		m.mu.Unlock()
		err := writeFrames(conn, frames)
		s.release(conn, err, taken...)
		if err != nil {
			return err
		}
	}
}

// ping tells the replica the session is alive, unless a write is under
// way, which tells it already.
func (s *session) ping(conn net.Conn) error {
	m := s.m
	m.mu.Lock()
	if s.writing {
		m.mu.Unlock()
		return nil
	}
	s.writing = true
	m.mu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(m.opts.Timeout))
	_, err := conn.Write(wire.AppendFrame(nil, wire.TypePing, m.epoch, 0, nil))
	s.release(conn, err)
	return err
}

// claimLocked takes the right to write, the frames up to s.next having
// been taken. The replica must acknowledge them in time.
func (s *session) claimLocked(conn net.Conn) {
	s.writing = true
	s.sent = s.next - 1
	conn.SetReadDeadline(time.Now().Add(s.m.opts.Timeout))
	conn.SetWriteDeadline(time.Now().Add(s.m.opts.Timeout))
}

// release gives up the right to write, after writing the frames of
// batches to conn. A failed write closes the connection: the session
// reconnects.
func (s *session) release(conn net.Conn, err error, batches ...*batch) {
	if err != nil {
		conn.Close()
	}
	m := s.m
	m.mu.Lock()
	s.writing = false
	for _, b := range batches {
		b.done()
	}
	m.mu.Unlock()
	s.wakeUp()
}

// directLocked returns the connection to write batch seq to directly, from
// a sync commit, if the replica is streaming and was sent everything
// before it: that saves waking the session's goroutine on the commit's
// path. The right to write is then held; release gives it up.
func (s *session) directLocked(seq uint64, size int64) net.Conn {
	if s.state != stateStreaming || s.writing || s.next != seq || s.conn == nil || size > s.helloSize {
		return nil
	}
	s.next++
	s.claimLocked(s.conn)
	return s.conn
}

// readAcks reads the replica's acknowledgements until the connection ends.
func (s *session) readAcks(conn net.Conn, r *wire.Reader) error {
	for {
		f, err := r.Next()
		if err != nil {
			return err
		}
		switch f.Type {
		case wire.TypeAck:
			chain, err := wire.DecodeAck(f.Payload)
			if err != nil {
				return err
			}
			if err := s.ack(conn, f.Seq, chain); err != nil {
				if errors.Is(err, ErrDiverged) {
					sendError(conn, err)
				}
				return err
			}
		case wire.TypeError:
			return remoteError(f)
		default:
			return protocolError("%s message from a replica", f.Type)
		}
	}
}

// ack records the replica's acknowledgement of every batch up to seq,
// whose chain value on the replica is chain: the replica holds exactly
// this primary's batches only if it is this primary's.
func (s *session) ack(conn net.Conn, seq uint64, chain wire.Chain) error {
	m := s.m
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq > s.sent || seq < s.acked {
		return protocolError("acknowledgement of batch %d, sent up to %d, acknowledged up to %d", seq, s.sent, s.acked)
	}
	switch want, known := m.chainAtLocked(seq); {
	case !known:
		return protocolError("acknowledgement of batch %d, no longer held to check", seq)
	case want != chain:
		return divergedError("replica %s acknowledged a batch %d of epoch %d that is not this primary's (chain %v, this primary's %v)",
			s.addr, seq, m.epoch, chain, want)
	}
	if b := m.hist.get(seq); b != nil {
		m.metrics.ack.Observe(now.Sub(b.captured).Seconds())
	}
	if s.state == stateSnapshot {
		s.state = stateStreaming
		m.log.Info("mirror: replica caught up", "replica", s.addr, "seq", seq)
	}
	s.acked, s.ackedCum, s.need = seq, m.cumLocked(seq), seq+1
	if s.acked == s.sent {
		conn.SetReadDeadline(time.Time{})
	}
	m.signalLocked()
	return nil
}
