package mirror

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// A listed snapshot brings a replica that holds some batch of an older
// incarnation (the base of the primary's hello) up to a new one, with
// only the chunks the primary knows that replica lacks: a guardian
// saving a pool whose application died sends what its dirty-chunk
// record lists, rather than hash both copies of the whole pool. The
// chunks are held in memory, up to wire.MaxListed bytes, and applied
// to the pool file in place through the journal with the batch the
// snapshot is consistent at, so that the pool file goes from the base
// to that batch atomically, as a whole: there is no snapshot file to
// copy the pool into.

// beginListed starts a listed snapshot taken after batch base of epoch,
// whose chain value is chain. The pool file holds the base.
func (p *replicaPool) beginListed(epoch, base uint64, size int64, chain wire.Chain) (*snapshot, error) {
	if p.pool == nil || p.size != size {
		return nil, protocolError("listed snapshot of a pool the replica has no copy of")
	}
	if epoch == p.epoch {
		return nil, protocolError("listed snapshot of epoch %d, which the replica holds already", epoch)
	}
	jf, err := p.j.stream()
	if err != nil {
		return nil, err
	}
	// Every chunk is in the pool file already: those sent replace it.
	units := (size + wire.HashChunk - 1) / wire.HashChunk
	have := make([]uint64, (units+63)/64)
	for i := range have {
		have[i] = ^uint64(0)
	}
	return &snapshot{size: size, epoch: epoch, applied: base, chain: chain, listed: true, have: have, jf: jf, pos: batchHeader}, nil
}

// batchHeader is the size of a batch payload's start: the chain value
// before it and the number of runs.
var batchHeader = int64(wire.BatchSize(0, 0))

// hold writes a listed snapshot's chunk to the journal file, as the next
// run of the batch that applies them all. The primary sends them in
// order, as a batch's runs must be.
func (s *snapshot) hold(off uint64, data []byte) error {
	if s.bytes+int64(len(data)) > wire.MaxListed {
		return limitError("listed snapshot of more than %d bytes", wire.MaxListed)
	}
	if len(s.runs) > 0 && off < s.heldEnd {
		return protocolError("listed snapshot chunk at offset %d after the chunk ending at %d", off, s.heldEnd)
	}
	hdr := wire.AppendRunHeader(make([]byte, 0, 12), off, len(data))
	if _, err := unix.Pwritev(int(s.jf.Fd()), [][]byte{hdr, data}, recordHeader+s.pos); err != nil {
		return fmt.Errorf("journal %s: %w", s.jf.Name(), err)
	}
	s.runs = append(s.runs, listedRun{off: off, pos: s.pos + int64(len(hdr)), n: int64(len(data))})
	s.pos += int64(len(hdr) + len(data))
	s.bytes += int64(len(data))
	s.heldEnd = off + uint64(len(data))
	return nil
}

// listedRun is a chunk of a listed snapshot: at offset off of the pool,
// n bytes, at pos in the journal record's payload.
type listedRun struct {
	off    uint64
	pos, n int64
}

// listedBatch applies the batch a listed snapshot is consistent at: the
// chunks first, as the state after the snapshot's base batch, then the
// batch, each journaled before it is written. It reports whether the
// snapshot is installed, which it is once the batch is applied.
func (p *replicaPool) listedBatch(s *snapshot, seq uint64, payload []byte, sum uint64, b wire.Batch) (bool, error) {
	switch {
	case s.consistentAt == 0:
		return false, protocolError("batch %d in the middle of a snapshot", seq)
	case seq != s.applied+1 || seq != s.consistentAt:
		return false, protocolError("batch %d after batch %d of a listed snapshot consistent at %d", seq, s.applied, s.consistentAt)
	case b.Prev != s.chain:
		return false, divergedError("batch %d of epoch %d does not follow batch %d of the snapshot: chain %v, the batch follows %v",
			seq, s.epoch, s.applied, s.chain, b.Prev)
	}
	if err := p.applyListed(s); err != nil {
		return false, err
	}
	if err := p.applyBatch(s.epoch, seq, payload, sum, b); err != nil {
		return false, err
	}
	return true, nil
}

// applyListed completes the journal record of the chunks of s, whose
// state is the snapshot's base, and copies them to the pool file: a
// crash from here on redoes them on the pool file, which held the
// replica's own state before.
func (p *replicaPool) applyListed(s *snapshot) error {
	start := wire.AppendBatchHeader(make([]byte, 0, batchHeader), s.chain, len(s.runs))
	if _, err := s.jf.WriteAt(start, recordHeader); err != nil {
		return fmt.Errorf("journal %s: %w", s.jf.Name(), err)
	}
	if err := p.syncPool(); err != nil {
		return err
	}
	if err := p.j.commitStream(record{kind: recordBatch, seen: p.seen, epoch: s.epoch, seq: s.applied, chain: s.chain, streamed: s.pos}); err != nil {
		return err
	}
	p.epoch, p.seq, p.chain = s.epoch, s.applied, s.chain
	p.unsynced = true
	for _, r := range s.runs {
		if err := copyRange(p.pool, int64(r.off), s.jf, recordHeader+r.pos, r.n); err != nil {
			return fmt.Errorf("write replica pool file %s: %w: %w", p.poolPath(), err, ErrReplicaIO)
		}
	}
	s.runs = nil
	return nil
}

// copyRange copies n bytes of src at srcOff to dst at dstOff in the
// kernel (copy_file_range), falling back to reading and writing.
func copyRange(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	for n > 0 {
		in, out := srcOff, dstOff
		k, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(n), 0)
		if err != nil || k == 0 {
			_, err := io.Copy(io.NewOffsetWriter(dst, dstOff), io.NewSectionReader(src, srcOff, n))
			return err
		}
		srcOff, dstOff, n = srcOff+int64(k), dstOff+int64(k), n-int64(k)
	}
	return nil
}
