package mirror

import (
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// An async batch need not be read at its commit boundary. When a replica
// is waiting for it, the capture only takes the list of its lines and
// opens a heap snapshot limited to them: a later commit that changes one
// of them first keeps its old content (the heap's copy-on-write of
// 64-byte lines). The sender then reads the batch, as of its commit,
// while commits go on, and closes the snapshot, which frees the kept
// lines. Past Options.KeepBytes of kept lines, the snapshot calls back
// before the line changes and the batch is read there, on the committing
// goroutine, as it would have been at its boundary.
//
// Batches are read in sequence, since each one's chain value follows the
// one before: at most one batch is captured and not read (Mirror.lazy),
// and a capture that reads its batch at once reads that one first. A
// sender takes a batch only once it is read, so a replica is not idle
// while one waits, and the next capture is then not deferred.

// keepBatch captures batch seq from m.runs without reading it. It
// reports false, having captured nothing, if the snapshot cannot be taken.
func (m *Mirror) keepBatch(seq uint64) bool {
	ranges := make([]heap.Extent, len(m.runs))
	var n int64
	for i, r := range m.runs {
		ranges[i] = heap.Extent{Off: int64(r.Off), Len: int64(r.Len)}
		n += int64(r.Len)
	}
	if wire.BatchSize(len(m.runs), int(n)) > wire.MaxPayload {
		return false
	}
	snap, err := m.h.Snapshot(&heap.SnapshotOptions{
		Exact: true, Ranges: ranges, MemLimit: m.opts.KeepBytes, OnFull: m.keepFull,
	})
	if err != nil {
		m.log.Warn("mirror: cannot keep a batch's lines; reading it now", "seq", seq, "err", err)
		return false
	}
	now := time.Now()
	m.mu.Lock()
	m.head = seq
	m.cum += n
	b := &batch{seq: seq, bytes: n, cum: m.cum, oldest: m.endPendingLocked(now), captured: now,
		runs: slices.Clone(m.runs), snap: snap, size: int64(len(m.mem))}
	m.lazy = b
	m.hist.add(b, m.keepLocked())
	for _, s := range m.sessions {
		s.wakeUp()
	}
	m.mu.Unlock()
	m.metrics.batches.Inc()
	m.metrics.bytes.Add(float64(n))
	m.metrics.lazy.Inc()
	return true
}

// keepFull reads the batch not read yet on the committing goroutine: its
// kept lines reached KeepBytes and a commit is about to change another.
func (m *Mirror) keepFull() {
	m.metrics.fallbacks.Inc()
	m.readBatch()
}

// readBatch reads the batch not read yet, if any.
func (m *Mirror) readBatch() {
	m.encMu.Lock()
	defer m.encMu.Unlock()
	m.readLazy()
}

// readLazy reads and encodes the batch not read yet, if any; encMu is
// held. A batch that cannot be read (the heap is closing) is dropped as
// one too large for a frame is: replicas get a snapshot.
func (m *Mirror) readLazy() {
	m.mu.Lock()
	b := m.lazy
	m.mu.Unlock()
	if b == nil {
		return
	}
	prev := m.chain
	frame, err := m.encodeKept(b, prev)
	var chain wire.Chain
	if err == nil {
		chain = m.chainer.Next(m.epoch, b.seq, wire.FrameSum(frame))
	} else {
		putFrame(frame)
		frame = nil
		chain = m.chainer.Next(m.epoch, b.seq, xxhash.Sum64(prev[:]))
		m.log.Warn("mirror: cannot read a batch's kept lines", "seq", b.seq, "err", err)
	}
	kept := b.snap.Stats().Lines
	b.snap.Close()
	m.mu.Lock()
	m.chain = chain
	b.prev, b.chain, b.frame = prev, chain, frame
	b.runs, b.snap, m.lazy = nil, nil, nil
	if frame == nil {
		m.dropHistoryLocked(b.seq, b.bytes)
	} else {
		m.hist.bytes += int64(cap(frame))
	}
	for _, s := range m.sessions {
		s.wakeUp()
	}
	m.mu.Unlock()
	m.metrics.kept.Add(float64(kept))
}

// encodeKept makes the wire frame of b, whose chain value before is prev,
// from its snapshot: the content of its lines at its commit boundary.
func (m *Mirror) encodeKept(b *batch, prev wire.Chain) ([]byte, error) {
	f := getFrame(wire.HeaderSize + wire.BatchSize(len(b.runs), int(b.bytes)))
	f = wire.BeginFrame(f, wire.TypeBatch, m.epoch, b.seq)
	f = wire.AppendBatchHeader(f, prev, len(b.runs))
	m.offs = m.offs[:0]
	starts := make([]int, len(b.runs))
	for i, r := range b.runs {
		f = wire.AppendRunHeader(f, uint64(r.Off), r.Len)
		starts[i] = len(f)
		f = slices.Grow(f, r.Len)[:len(f)+r.Len]
		m.offs = append(m.offs, int64(r.Off))
	}
	m.bufs = m.bufs[:0]
	for i, r := range b.runs {
		m.bufs = append(m.bufs, f[starts[i]:starts[i]+r.Len])
	}
	if err := b.snap.ReadRanges(m.bufs, m.offs); err != nil {
		return f, err
	}
	wire.FinishFrame(f)
	return f, nil
}

// dropLazy closes the snapshot of a batch not read yet, once the mirror
// is closed: nobody will send it.
func (m *Mirror) dropLazy() {
	m.encMu.Lock()
	defer m.encMu.Unlock()
	m.mu.Lock()
	b := m.lazy
	m.lazy = nil
	var snap *heap.Snapshot
	if b != nil {
		snap, b.snap = b.snap, nil
	}
	m.mu.Unlock()
	if snap != nil {
		snap.Close()
	}
}
