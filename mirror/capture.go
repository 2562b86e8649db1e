package mirror

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// onCommit runs at the end of every commit, under the heap's writer lock:
// the pool's memory is the committed state, and nothing writes it.
func (m *Mirror) onCommit() error {
	dirty := m.tracker.DirtyBytes()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	if dirty > 0 && m.pendingSince.IsZero() {
		m.pendingSince = time.Now()
	}
	capture := m.capReq || dirty >= maxCapture || m.senderIdleLocked()
	m.mu.Unlock()
	if m.opts.Mode == Sync {
		if seq := m.capture(); seq != 0 {
			return m.waitAcks(seq)
		}
		return nil
	}
	if capture {
		m.capture()
	}
	return m.backpressure()
}

// senderIdleLocked reports whether a streaming replica has been sent
// everything captured: capturing now gets the new lines to it at once.
func (m *Mirror) senderIdleLocked() bool {
	for _, s := range m.sessions {
		if s.state == stateStreaming && s.next > m.head {
			return true
		}
	}
	return false
}

// requestCaptureLocked asks for a capture at the next commit boundary.
func (m *Mirror) requestCaptureLocked() {
	if !m.capReq {
		m.capReq = true
		close(m.capCh)
	}
}

// signalLocked wakes whoever waits for acknowledgements or session states.
func (m *Mirror) signalLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// capture makes the lines written back since the last capture the next
// batch. It must run at a commit boundary, under the heap's writer lock.
// In async mode, when a replica is waiting for the batch, it is read
// later by the goroutine sending it (see keepBatch); otherwise it is read
// from the pool now. It returns the batch's sequence number, or 0 when
// there was nothing to capture and no capture was asked for.
func (m *Mirror) capture() uint64 {
	m.runs = m.tracker.Take(m.runs[:0])
	m.mu.Lock()
	req, seq := m.capReq, m.head+1
	if len(m.runs) == 0 && !req {
		m.pendingSince = time.Time{}
		m.mu.Unlock()
		return 0
	}
	wants := m.snapWant
	m.snapWant = nil
	m.markCapturedLocked()
	lazy := len(wants) == 0 && m.lazy == nil && m.opts.Mode == Async && m.opts.KeepBytes > 0 &&
		!m.sealed && len(m.runs) > 0 && m.senderIdleLocked()
	m.mu.Unlock()
	if m.opts.OnCapture != nil {
		m.opts.OnCapture(seq)
	}
	if lazy && m.keepBatch(seq) {
		return seq
	}
	// Batches are read in sequence: one captured before and not read yet
	// is read first.
	m.encMu.Lock()
	m.readLazy()
	snaps := m.takeSnapshots(wants)

	prev := m.chain
	frame, n := m.encode(seq, prev, m.runs)
	var chain wire.Chain
	if frame != nil {
		chain = m.chainer.Next(m.epoch, seq, wire.FrameSum(frame))
	} else {
		// No replica is sent this batch: they get a snapshot taken after
		// it. Its chain value only has to be one no other batch has.
		chain = m.chainer.Next(m.epoch, seq, xxhash.Sum64(m.chain[:]))
	}
	now := time.Now()
	m.mu.Lock()
	m.head, m.chain = seq, chain
	m.encMu.Unlock()
	m.cum += n
	m.deliverSnapshotsLocked(wants, snaps, seq, chain)
	oldest := m.endPendingLocked(now)
	var direct []net.Conn
	var directTo []*session
	var b *batch
	if frame == nil {
		m.dropHistoryLocked(seq, n)
	} else {
		b = &batch{seq: seq, frame: frame, prev: prev, chain: chain, bytes: n, cum: m.cum, oldest: oldest, captured: now, size: int64(len(m.mem))}
		for _, s := range m.sessions {
			if m.opts.Mode == Sync {
				if c := s.directLocked(seq, b.size); c != nil {
					direct, directTo = append(direct, c), append(directTo, s)
					b.take()
					continue
				}
			}
			s.wakeUp()
		}
		m.hist.add(b, m.keepLocked())
	}
	m.mu.Unlock()
	for i, c := range direct {
		_, err := c.Write(frame)
		directTo[i].release(c, err, b)
	}
	m.metrics.batches.Inc()
	m.metrics.bytes.Add(float64(n))
	return seq
}

// markCapturedLocked records the chunks the runs being captured change,
// for listed snapshots.
func (m *Mirror) markCapturedLocked() {
	if m.captured == nil {
		return
	}
	for _, r := range m.runs {
		for c := r.Off / wire.HashChunk; c*wire.HashChunk < r.Off+r.Len; c++ {
			m.captured[c/64] |= 1 << (c % 64)
		}
	}
}

// endPendingLocked notes that the lines pending are captured, and the
// capture asked for done. It returns when the oldest commit captured
// ended.
func (m *Mirror) endPendingLocked(now time.Time) time.Time {
	oldest := m.pendingSince
	if oldest.IsZero() {
		oldest = now
	}
	m.pendingSince = time.Time{}
	if m.capReq {
		m.capReq = false
		m.capCh = make(chan struct{})
	}
	if len(m.snapWant) > 0 {
		// A session asked for a snapshot after this capture read the
		// list: the next commit boundary serves it.
		m.requestCaptureLocked()
	}
	return oldest
}

// encode makes the wire frame of batch seq, following the batch whose
// chain value is prev, from the pool's memory. It returns a nil frame when
// the batch is too large for one frame.
//
// A sealed pool's batch also carries, at seal.DigestOff, a digest record
// saying that the lines hold exactly what they hold now, in place of the
// bytes the primary's own file has there: a replica, which applies whole
// batches, always has an exact digest, which its key holder checks, so
// that a record put back from an older batch is found.
func (m *Mirror) encode(seq uint64, prev wire.Chain, runs []Run) ([]byte, int64) {
	var digest []byte
	if m.sealed {
		var err error
		if digest, err = device.SealedDigest(m.h.Device(), m.epoch, seq); err != nil {
			m.log.Error("mirror: sealed digest", "err", err)
			return nil, 0
		}
		runs = cutRun(&m.cut, runs, seal.DigestOff, seal.DigestOff+len(digest))
	}
	n, count := len(digest), len(runs)
	if digest != nil {
		count++
	}
	for _, r := range runs {
		n += r.Len
	}
	size := wire.BatchSize(count, n)
	if size > wire.MaxPayload {
		return nil, int64(n)
	}
	f := getFrame(wire.HeaderSize + size)
	f = wire.BeginFrame(f, wire.TypeBatch, m.epoch, seq)
	f = wire.AppendBatchHeader(f, prev, count)
	for _, r := range runs {
		if digest != nil && r.Off > seal.DigestOff {
			f = wire.AppendRun(f, seal.DigestOff, digest)
			digest = nil
		}
		f = wire.AppendRun(f, uint64(r.Off), m.mem[r.Off:r.Off+r.Len])
	}
	if digest != nil {
		f = wire.AppendRun(f, seal.DigestOff, digest)
	}
	wire.FinishFrame(f)
	return f, int64(n)
}

// cutRun returns runs, ordered and disjoint, without [lo, hi), built in
// *buf.
func cutRun(buf *[]Run, runs []Run, lo, hi int) []Run {
	out := (*buf)[:0]
	for _, r := range runs {
		end := r.Off + r.Len
		if end <= lo || r.Off >= hi {
			out = append(out, r)
			continue
		}
		if r.Off < lo {
			out = append(out, Run{Off: r.Off, Len: lo - r.Off})
		}
		if end > hi {
			out = append(out, Run{Off: hi, Len: end - hi})
		}
	}
	*buf = out
	return out
}

// dropHistoryLocked handles a batch too large for a frame: no replica can
// be sent it, so every replica is disconnected and will get a snapshot.
func (m *Mirror) dropHistoryLocked(seq uint64, n int64) {
	m.log.Warn("mirror: batch too large for a frame; replicas will be sent snapshots", "seq", seq, "bytes", n)
	m.hist.reset()
	for _, s := range m.sessions {
		if s.conn != nil {
			s.conn.Close()
		}
	}
}

// keepLocked returns the oldest batch a connected replica may still need.
func (m *Mirror) keepLocked() uint64 {
	keep := m.head + 1
	for _, s := range m.sessions {
		if s.state == stateStreaming || s.state == stateSnapshot {
			keep = min(keep, s.need)
		}
	}
	return keep
}

// waitAcks waits, in sync mode, until Options.Acks replicas acknowledged
// batch seq. While it waits it serves capture requests: the heap's writer
// lock is held, so no one else can make a commit boundary.
func (m *Mirror) waitAcks(seq uint64) error {
	timer := time.NewTimer(m.opts.AckTimeout)
	defer timer.Stop()
	for {
		m.mu.Lock()
		acked, live, errs := m.ackCountLocked(seq)
		ch, capCh, req, closed := m.changed, m.capCh, m.capReq, m.closed
		m.mu.Unlock()
		switch {
		case acked >= m.opts.Acks:
			return nil
		case closed:
			return fmt.Errorf("commit batch %d: %w", seq, ErrClosed)
		case live < m.opts.Acks:
			return fmt.Errorf("commit batch %d: %d replicas can acknowledge, %d needed: %w", seq, live, m.opts.Acks, errors.Join(errs...))
		case req:
			m.capture()
			continue
		}
		select {
		case <-ch:
		case <-capCh:
		case <-m.done:
		case <-timer.C:
			m.mu.Lock()
			acked, _, errs := m.ackCountLocked(seq)
			m.mu.Unlock()
			return fmt.Errorf("commit batch %d: %d of %d acknowledgements within %v: %w",
				seq, acked, m.opts.Acks, m.opts.AckTimeout, errors.Join(append([]error{ErrAckTimeout}, errs...)...))
		}
	}
}

// ackCountLocked returns how many replicas acknowledged batch seq, how many
// still could (they have not refused this primary), and the errors of the
// others.
func (m *Mirror) ackCountLocked(seq uint64) (acked, live int, errs []error) {
	for _, s := range m.sessions {
		switch {
		case s.acked >= seq:
			acked++
			live++
		case s.state == stateRefused:
			errs = append(errs, fmt.Errorf("replica %s: %w", s.addr, s.err))
		default:
			live++
			if s.err != nil {
				errs = append(errs, fmt.Errorf("replica %s: %w", s.addr, s.err))
			}
		}
	}
	return acked, live, errs
}

// backpressure makes an async commit wait while a streaming replica lags
// past the bounds. Pending lines are captured first, so that the replica
// has what it needs to catch up.
func (m *Mirror) backpressure() error {
	for {
		dirty := int64(m.tracker.DirtyBytes())
		m.mu.Lock()
		over := !m.closed && m.overBoundLocked(time.Now(), dirty)
		ch, capCh, req := m.changed, m.capCh, m.capReq
		m.mu.Unlock()
		if !over {
			if req {
				m.capture()
			}
			return nil
		}
		if dirty > 0 || req {
			m.capture()
			continue
		}
		select {
		case <-ch:
		case <-capCh:
		case <-m.done:
		}
	}
}

// overBoundLocked reports whether a streaming replica lags past a bound.
func (m *Mirror) overBoundLocked(now time.Time, dirty int64) bool {
	for _, s := range m.sessions {
		if s.state != stateStreaming {
			continue
		}
		bytes, age := m.lagLocked(s, now, dirty)
		if bytes > m.opts.MaxLagBytes || age > m.opts.MaxLagTime {
			return true
		}
	}
	return false
}

// lagLocked returns what s has not acknowledged: pool bytes, captured or
// pending, and the age of the oldest such commit.
func (m *Mirror) lagLocked(s *session, now time.Time, dirty int64) (int64, time.Duration) {
	bytes := m.cum - s.ackedCum + dirty
	var oldest time.Time
	if b := m.hist.get(s.acked + 1); b != nil {
		oldest = b.oldest
	} else if dirty > 0 {
		oldest = m.pendingSince
	}
	if oldest.IsZero() {
		return bytes, 0
	}
	return bytes, now.Sub(oldest)
}

// cumLocked returns the pool bytes captured up to batch seq.
func (m *Mirror) cumLocked(seq uint64) int64 {
	if b := m.hist.get(seq + 1); b != nil {
		return b.cum - b.bytes
	}
	if b := m.hist.get(seq); b != nil {
		return b.cum
	}
	return m.cum
}

// flusher makes a commit boundary when a capture was asked for and no
// commit came within FlushDelay to serve it: an empty Update runs the
// commit hooks.
func (m *Mirror) flusher() {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		m.mu.Lock()
		req, ch := m.capReq, m.capCh
		m.mu.Unlock()
		if !req {
			select {
			case <-ch:
				continue
			case <-m.done:
				return
			}
		}
		timer.Reset(m.opts.FlushDelay)
		select {
		case <-timer.C:
		case <-m.done:
			return
		}
		m.mu.Lock()
		still := m.capReq && m.capCh == ch
		m.mu.Unlock()
		if !still {
			continue
		}
		if err := m.h.Update(func(*heap.Tx) error { return nil }); err != nil && !errors.Is(err, ErrAckTimeout) {
			m.log.Warn("mirror: cannot make a commit boundary", "err", err)
			select {
			case <-time.After(m.opts.RetryInterval):
			case <-m.done:
				return
			}
		}
	}
}

// snapWait is a session waiting for a snapshot taken at a commit boundary.
type snapWait struct {
	s  *session
	ch chan snapTaken
}

// snapTaken is a snapshot of the pool as of batch base, whose chain value
// is chain. img reads what is sent: the snapshot or, for a sealed pool,
// the sealed file holding it.
type snapTaken struct {
	snap *heap.Snapshot
	img  io.ReaderAt
	// size is the image's size: the pool's, or its sealed file's.
	size  int64
	base  uint64
	chain wire.Chain
	err   error
}

// takeSnapshots takes a snapshot for each waiting session. The capture
// runs in a commit hook, at a commit boundary under the heap's writer
// lock: each one is the pool's state as of the batch being captured. The
// sealed image of a sealed pool is set up here too, under the lock that
// a key rotation changes the sealed header and key under.
func (m *Mirror) takeSnapshots(wants []snapWait) []snapTaken {
	out := make([]snapTaken, len(wants))
	for i := range wants {
		t := &out[i]
		if t.snap, t.err = m.h.Snapshot(&heap.SnapshotOptions{Exact: true}); t.err != nil {
			continue
		}
		t.img, t.size = t.snap, t.snap.Size()
		if m.sealed {
			// Sealed as it is read, under new nonces: a snapshot's chunks
			// never match the replica's, so there is no delta, and the
			// chunk hashes the replica sent say nothing of the plaintext.
			if t.img, t.size, t.err = device.SealImage(m.h.Device(), t.snap); t.err != nil {
				t.snap.Close()
				t.snap = nil
			}
		}
	}
	return out
}

// deliverSnapshotsLocked hands each waiting session its snapshot as of
// batch seq, and marks it as receiving one from there: batches after seq
// are kept for it from now on.
func (m *Mirror) deliverSnapshotsLocked(wants []snapWait, snaps []snapTaken, seq uint64, chain wire.Chain) {
	for i, w := range wants {
		t := snaps[i]
		t.base, t.chain = seq, chain
		if t.err == nil {
			s := w.s
			s.state = stateSnapshot
			s.snapshots++
			s.sent, s.next, s.need = seq, seq+1, seq+1
		}
		w.ch <- t
	}
	if len(wants) > 0 {
		m.signalLocked()
	}
}
