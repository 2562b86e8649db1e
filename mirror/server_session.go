package mirror

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// replicaSession is one primary's session on the server.
type replicaSession struct {
	s     *Server
	c     net.Conn
	r     *wire.Reader
	e     *poolEntry
	p     *replicaPool
	epoch uint64
	// head is the primary's newest batch when it said hello.
	head uint64
	size int64
	snap *snapshot
	// offered is set while the pool file holds what the chunk hashes of
	// the answer to hello describe: a delta snapshot starts from it.
	offered bool
	// baseEpoch and baseSeq are the base of the primary's hello, if any;
	// based is set while the pool file holds it, so that a listed
	// snapshot may start from it.
	baseEpoch, baseSeq uint64
	based              bool
	runs               []wire.Run
	ack                []byte
	// applied and lag are the pool's metrics.
	applied, lag prometheus.Gauge
}

// run checks the primary's epoch, answers its hello and applies what it
// sends until the connection ends. A clean end of the stream returns nil.
func (rs *replicaSession) run() error {
	p := rs.p
	if rs.epoch < p.seen {
		return fmt.Errorf("pool %s: primary epoch %d is older than epoch %d, already seen: %w", p.name(), rs.epoch, p.seen, ErrStaleEpoch)
	}
	// A primary whose pool is larger than the replica's copy grew it.
	// In the replica's own epoch, it grew while mirrored: the replica
	// grows its copy and the primary resumes, its next batches writing
	// the new part. In a new epoch, it sends a snapshot of the new size: a
	// delta one against the chunks of the copy, never a listed one (its
	// base describes the pool at its new size). Pools never shrink.
	grown := p.size != 0 && rs.size > p.size
	if p.size != 0 && rs.size < p.size {
		return fmt.Errorf("pool %s: primary's pool is %d bytes, the replica's %d, and pools never shrink: %w", p.name(), rs.size, p.size, ErrWrongPool)
	}
	if err := p.noteEpoch(rs.epoch); err != nil {
		return err
	}
	if grown && rs.epoch == p.epoch {
		if err := p.grow(rs.size); err != nil {
			return err
		}
		rs.s.log.Info("replica: pool grew", "pool", p.name(), "bytes", rs.size, "epoch", p.epoch, "seq", p.seq)
		grown = false
	}
	rs.setState("connected")
	var hashes []wire.ChunkHash
	rs.based = !grown && p.pool != nil && rs.baseEpoch != 0 && rs.baseEpoch == p.epoch && p.seq >= rs.baseSeq && rs.epoch != p.epoch
	if p.pool != nil && rs.epoch != p.epoch && !rs.based && !rs.s.opts.NoChunkHashes {
		// A primary of another epoch (a restarted one) holds no history
		// for this replica and will send a snapshot: it compares these
		// with its own chunks, to send only those that differ (and, for a
		// pool that grew, every chunk past the copy). A primary of the
		// replica's own epoch most likely resumes; if it cannot, its
		// snapshot is a full one.
		var err error
		if hashes, err = chunkHashes(p.pool, p.size); err != nil {
			return err
		}
		rs.offered = true
	}
	// A copy smaller than the pool is of no use to the primary: it says
	// no position (epoch 0), so that a primary with a base that the copy
	// would otherwise qualify for does not send a listed snapshot, which
	// describes the pool chunk by chunk at its new size.
	epoch, seq := p.epoch, p.seq
	if grown {
		epoch, seq = 0, 0
	}
	ready := wire.AppendFrame(nil, wire.TypeReady, epoch, seq, wire.AppendReady(nil, wire.Ready{SeenEpoch: p.seen, ChainTag: p.chain.Tag(), Hashes: hashes}))
	if err := rs.write(ready); err != nil {
		return err
	}
	rs.s.log.Info("replica: primary connected", "pool", p.name(), "remote", rs.c.RemoteAddr().String(),
		"epoch", rs.epoch, "primary_head", rs.head, "replica_epoch", p.epoch, "replica_seq", p.seq)
	for {
		// A primary sends a ping at least every Options.Heartbeat: a
		// silent peer does not hold the pool, and its snapshot file,
		// for longer than the idle timeout.
		rs.c.SetReadDeadline(time.Now().Add(rs.s.opts.IdleTimeout))
		f, err := rs.r.Next()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("no message from the primary within the idle timeout of %v: %w", rs.s.opts.IdleTimeout, err)
		}
		if err != nil {
			return err
		}
		if f.Epoch != rs.epoch && f.Type != wire.TypeError {
			return protocolError("%s frame of epoch %d in a session of epoch %d", f.Type, f.Epoch, rs.epoch)
		}
		if err := rs.frame(f); err != nil {
			return err
		}
	}
}

// frame handles one frame of the session.
func (rs *replicaSession) frame(f wire.Frame) error {
	switch f.Type {
	case wire.TypeBatch:
		return rs.batch(f)
	case wire.TypePing:
		return nil
	case wire.TypeError:
		return fmt.Errorf("the primary ends the session: %w", remoteError(f))
	case wire.TypeSnapBegin:
		sb, err := wire.DecodeSnapBegin(f.Payload)
		if err != nil {
			return err
		}
		if sb.UUID != rs.p.uuid || int64(sb.Size) != rs.size {
			return protocolError("snapshot of another pool")
		}
		if sb.Listed && !rs.based {
			return protocolError("listed snapshot, but the replica does not hold the base of the hello")
		}
		if sb.Delta && !sb.Listed && !rs.offered {
			return protocolError("delta snapshot, but the replica's copy is not the one it described")
		}
		rs.p.abort(rs.snap)
		if sb.Listed {
			rs.snap, err = rs.p.beginListed(rs.epoch, f.Seq, rs.size, sb.Chain)
		} else {
			rs.snap, err = rs.p.beginSnapshot(rs.epoch, f.Seq, rs.size, sb.Delta, sb.Chain)
		}
		rs.offered, rs.based = false, false
		rs.setState("snapshot")
		return err
	case wire.TypeSnapChunk:
		ch, err := wire.DecodeSnapChunk(f.Payload)
		if err != nil {
			return err
		}
		if rs.snap == nil {
			return protocolError("snapshot chunk outside a snapshot")
		}
		rs.s.metrics.bytes.Add(float64(len(ch.Data)))
		return rs.snap.chunk(ch.Off, ch.Data)
	case wire.TypeSnapEnd:
		se, err := wire.DecodeSnapEnd(f.Payload)
		if err != nil {
			return err
		}
		if rs.snap == nil {
			return protocolError("snapshot end outside a snapshot")
		}
		return rs.snap.end(se.ConsistentAt)
	}
	return protocolError("unexpected %s message", f.Type)
}

// batch applies a batch, to the snapshot being received or to the pool
// file, and acknowledges it once durable.
func (rs *replicaSession) batch(f wire.Frame) error {
	b, err := wire.DecodeBatch(f.Payload, rs.runs[:0])
	if err != nil {
		return fmt.Errorf("batch %d: %w", f.Seq, err)
	}
	rs.runs = b.Runs
	p := rs.p
	if rs.snap != nil {
		var installed bool
		if rs.snap.listed {
			installed, err = p.listedBatch(rs.snap, f.Seq, f.Payload, f.PayloadSum, b)
		} else {
			installed, err = p.snapBatch(rs.snap, f.Seq, f.PayloadSum, b)
		}
		if err != nil || !installed {
			return err
		}
		rs.snap = nil
		rs.s.metrics.snapshots.Inc()
		rs.s.log.Info("replica: snapshot installed", "pool", p.name(), "epoch", p.epoch, "seq", p.seq)
	} else {
		if f.Seq != p.seq+1 || p.epoch != rs.epoch {
			return protocolError("batch %d of epoch %d, the replica holds batch %d of epoch %d", f.Seq, rs.epoch, p.seq, p.epoch)
		}
		rs.offered, rs.based = false, false
		if err := p.applyBatch(rs.epoch, f.Seq, f.Payload, f.PayloadSum, b); err != nil {
			return err
		}
		rs.s.metrics.batches.Inc()
		for _, r := range b.Runs {
			rs.s.metrics.bytes.Add(float64(len(r.Data)))
		}
	}
	if rs.s.applied != nil && p.mem != nil {
		rs.s.applied(p.seq, p.mem)
	}
	rs.setState("streaming")
	rs.ack = wire.AppendFrame(rs.ack[:0], wire.TypeAck, rs.epoch, p.seq, p.chain[:])
	if err := rs.write(rs.ack); err != nil {
		return err
	}
	// The batch is durable in the journal, which is what the ack
	// promises; the pool file is synced now, while the primary goes on.
	return p.syncPool()
}

// write writes b to the primary within the idle timeout.
func (rs *replicaSession) write(b []byte) error {
	rs.c.SetWriteDeadline(time.Now().Add(rs.s.opts.IdleTimeout))
	_, err := rs.c.Write(b)
	return err
}

// setState updates what Status reports.
func (rs *replicaSession) setState(state string) {
	s, p := rs.s, rs.p
	head := max(rs.head, p.seq)
	s.mu.Lock()
	rs.e.state, rs.e.head = state, head
	rs.e.epoch, rs.e.seq, rs.e.seen = p.epoch, p.seq, p.seen
	if state == "streaming" {
		rs.e.lastTime = time.Now()
	}
	s.mu.Unlock()
	if rs.applied == nil {
		rs.applied, rs.lag = s.metrics.applied.WithLabelValues(p.name()), s.metrics.lag.WithLabelValues(p.name())
	}
	rs.applied.Set(float64(p.seq))
	rs.lag.Set(float64(head - p.seq))
}

// chunkHashes returns the hash of each wire.HashChunk of the first size
// bytes of f. It reads the file rather than the pool's mapping: the kernel
// copies from the page cache, where a pass over a mapping would fault on
// every page not touched yet, which under shadow paging costs
// microseconds apiece.
func chunkHashes(f *os.File, size int64) ([]wire.ChunkHash, error) {
	hs := make([]wire.ChunkHash, 0, (size+wire.HashChunk-1)/wire.HashChunk)
	buf := make([]byte, wire.HashChunk)
	for off := int64(0); off < size; off += wire.HashChunk {
		b := buf[:min(wire.HashChunk, size-off)]
		if _, err := f.ReadAt(b, off); err != nil {
			return nil, fmt.Errorf("hash replica pool file %s at offset %d: %w", f.Name(), off, err)
		}
		hs = append(hs, wire.HashChunkOf(b))
	}
	return hs, nil
}
