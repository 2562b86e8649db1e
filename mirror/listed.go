package mirror

import (
	"fmt"

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
	// Every chunk is in the pool file already: those sent replace it.
	units := (size + wire.HashChunk - 1) / wire.HashChunk
	have := make([]uint64, (units+63)/64)
	for i := range have {
		have[i] = ^uint64(0)
	}
	return &snapshot{size: size, epoch: epoch, applied: base, chain: chain, listed: true, have: have}, nil
}

// hold appends a listed snapshot's chunk to the batch payload that
// applies them all. The primary sends them in order, so the payload is
// built as they come, in the one copy out of the frame.
func (s *snapshot) hold(off uint64, data []byte) error {
	if s.bytes+int64(len(data)) > wire.MaxListed {
		return limitError("listed snapshot of more than %d bytes", wire.MaxListed)
	}
	if s.runs > 0 && off < s.heldEnd {
		return protocolError("listed snapshot chunk at offset %d after the chunk ending at %d", off, s.heldEnd)
	}
	if s.payload == nil {
		s.payload = wire.AppendBatchHeader(nil, s.chain, 0)
	}
	s.payload = wire.AppendRun(s.payload, off, data)
	s.bytes += int64(len(data))
	s.runs++
	s.heldEnd = off + uint64(len(data))
	return nil
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

// applyListed writes the chunks of s, journaled as one batch record
// whose state is the snapshot's base: a crash from here on redoes them
// on the pool file, which held the replica's own state before.
func (p *replicaPool) applyListed(s *snapshot) error {
	if s.payload == nil {
		s.payload = wire.AppendBatchHeader(nil, s.chain, 0)
	}
	wire.SetBatchRuns(s.payload, s.runs)
	b, err := wire.DecodeBatch(s.payload, nil)
	if err != nil {
		return fmt.Errorf("listed snapshot: %w", err)
	}
	if err := p.checkRuns(b.Runs, s.size); err != nil {
		return err
	}
	if err := p.journal(record{kind: recordBatch, seen: p.seen, epoch: s.epoch, seq: s.applied, chain: s.chain, payload: s.payload}); err != nil {
		return err
	}
	p.epoch, p.seq, p.chain = s.epoch, s.applied, s.chain
	// Whole chunks are written to the file rather than copied into the
	// mapping, which would fault on each page; syncPool makes them
	// durable either way.
	p.unsynced = true
	for _, r := range b.Runs {
		if _, err := p.pool.WriteAt(r.Data, int64(r.Off)); err != nil {
			return fmt.Errorf("write replica pool file %s: %w: %w", p.poolPath(), err, ErrReplicaIO)
		}
	}
	s.payload = nil
	return nil
}
