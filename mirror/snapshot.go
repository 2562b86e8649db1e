package mirror

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/internal/fsx"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// snapshot is a copy of the pool being received into the snapshot file.
// It is installed only when whole: every chunk received (or, for a delta,
// taken from the replica's copy), the batches up to the one it is
// consistent at applied on the chain, and a valid header of the right pool.
type snapshot struct {
	f     *os.File
	size  int64
	epoch uint64
	// applied is the batch whose state the file holds once consistent,
	// chain the chain value after it; consistentAt is the batch the copy
	// is consistent at, zero until the copy's end.
	applied, consistentAt uint64
	chain                 wire.Chain
	// have has a bit per wire.HashChunk of the pool, set once the chunk
	// is in the file; missing counts the bits not set.
	have    []uint64
	missing int
	// listed is set for a listed snapshot, whose chunks are written to
	// the journal file jf, as the runs of a batch payload of pos bytes so
	// far (bytes of pool data, the last run ending at heldEnd), until
	// they are applied to the pool file in place; f is then nil.
	listed  bool
	jf      *os.File
	runs    []listedRun
	pos     int64
	bytes   int64
	heldEnd uint64
}

// beginSnapshot starts receiving a copy of the pool taken after batch
// base of epoch, whose chain value is chain. A delta copy starts from the
// replica's own pool file; the chunks received replace what differs.
func (p *replicaPool) beginSnapshot(epoch, base uint64, size int64, delta bool, chain wire.Chain) (*snapshot, error) {
	if epoch == p.epoch && base < p.seq {
		return nil, protocolError("snapshot taken after batch %d of epoch %d, but the replica holds batch %d of that epoch: a snapshot never moves a replica back",
			base, epoch, p.seq)
	}
	if epoch == p.epoch && base == p.seq && chain != p.chain {
		return nil, divergedError("snapshot taken after batch %d of epoch %d with chain %v, the replica's batch %d has chain %v",
			base, epoch, chain, p.seq, p.chain)
	}
	if delta && (p.pool == nil || p.size > size) {
		return nil, protocolError("delta snapshot of a pool the replica has no copy of")
	}
	// The mark makes a snapshot file left over by a crash from here on
	// one that recovery discards rather than installs.
	if err := p.journal(record{kind: recordMark, seen: p.seen, epoch: p.epoch, seq: p.seq, chain: p.chain}); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p.snapPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := fsx.Allocate(f, size); err != nil {
		f.Close()
		os.Remove(p.snapPath())
		return nil, err
	}
	units := int((size + wire.HashChunk - 1) / wire.HashChunk)
	s := &snapshot{f: f, size: size, epoch: epoch, applied: base, chain: chain, have: make([]uint64, (units+63)/64), missing: units}
	if delta {
		// A pool that grew starts from the copy it had: the chunks the
		// copy holds whole are in the file, the others will come.
		if err := copyFile(f, p.pool, p.size); err != nil {
			p.abort(s)
			return nil, fmt.Errorf("start a delta snapshot from the pool: %w", err)
		}
		for i := range int(p.size / wire.HashChunk) {
			s.mark(i)
		}
		if p.size == size {
			for i := range units {
				s.mark(i)
			}
		}
	}
	return s, nil
}

// mark records that chunk unit i is in the file.
func (s *snapshot) mark(i int) {
	if s.have[i/64]&(1<<(i%64)) == 0 {
		s.have[i/64] |= 1 << (i % 64)
		s.missing--
	}
}

// firstMissing returns the offset of the first chunk not received.
func (s *snapshot) firstMissing() int64 {
	for w, v := range s.have {
		if ^v != 0 {
			return int64(w*64+bits.TrailingZeros64(^v)) * wire.HashChunk
		}
	}
	return s.size
}

// chunk writes part of the copy: whole wire.HashChunk units, the last one
// possibly cut by the end of the pool.
func (s *snapshot) chunk(off uint64, data []byte) error {
	end := off + uint64(len(data))
	switch {
	case s.consistentAt != 0:
		return protocolError("snapshot chunk after the snapshot's end")
	case len(data) == 0 || len(data) > wire.MaxSnapChunk:
		return protocolError("snapshot chunk of %d bytes", len(data))
	case end > uint64(s.size) || end < off:
		return protocolError("snapshot chunk [%d, +%d) outside the pool of %d bytes", off, len(data), s.size)
	case off%wire.HashChunk != 0 || end%wire.HashChunk != 0 && end != uint64(s.size):
		return protocolError("snapshot chunk [%d, +%d) is not made of whole chunks of %d bytes", off, len(data), wire.HashChunk)
	}
	if s.listed {
		if err := s.hold(off, data); err != nil {
			return err
		}
	} else if _, err := s.f.WriteAt(data, int64(off)); err != nil {
		return err
	}
	for u := off / wire.HashChunk; u*wire.HashChunk < end; u++ {
		s.mark(int(u))
	}
	return nil
}

// end records the batch after which the copy is consistent. Every chunk
// must have been received.
func (s *snapshot) end(at uint64) error {
	if s.consistentAt != 0 || at <= s.applied {
		return protocolError("snapshot end at batch %d, snapshot taken after batch %d", at, s.applied)
	}
	if s.missing > 0 {
		return protocolError("snapshot ends with %d chunks of %d bytes missing, the first at offset %d", s.missing, wire.HashChunk, s.firstMissing())
	}
	s.consistentAt = at
	return nil
}

// snapBatch applies a batch, whose payload's xxhash64 is sum, to the copy
// and installs the copy once it reaches the batch it is consistent at. It
// reports whether it installed.
func (p *replicaPool) snapBatch(s *snapshot, seq, sum uint64, b wire.Batch) (bool, error) {
	if s.consistentAt == 0 {
		return false, protocolError("batch %d in the middle of a snapshot", seq)
	}
	if seq != s.applied+1 {
		return false, protocolError("batch %d after batch %d", seq, s.applied)
	}
	if b.Prev != s.chain {
		return false, divergedError("batch %d of epoch %d does not follow batch %d of the snapshot: chain %v, the batch follows %v",
			seq, s.epoch, s.applied, s.chain, b.Prev)
	}
	if err := p.checkRuns(b.Runs, s.size); err != nil {
		return false, err
	}
	for _, r := range b.Runs {
		if _, err := s.f.WriteAt(r.Data, int64(r.Off)); err != nil {
			return false, err
		}
	}
	s.applied, s.chain = seq, p.chainer.Next(s.epoch, seq, sum)
	if seq < s.consistentAt {
		return false, nil
	}
	return true, p.install(s)
}

// checkHeader returns an error unless f holds a valid pool header, in
// either slot, of this pool's UUID and of size bytes, or the valid header
// of a sealed file of this pool's UUID and of size bytes: the server holds
// no key, so a sealed pool's own header is not read.
func (p *replicaPool) checkHeader(f *os.File, size int64) error {
	b := make([]byte, layout.SlotOff(1)+layout.HeaderBytes)
	if _, err := f.ReadAt(b, 0); err != nil {
		return fmt.Errorf("read the pool header: %w", err)
	}
	if seal.IsSealed(b) {
		sh, err := seal.DecodeHeader(b)
		if err != nil {
			return err
		}
		if sh.UUID != p.uuid || seal.FileSize(int64(sh.PoolSize)) != size {
			return fmt.Errorf("sealed header of pool %x in a file of %d bytes, want pool %s in a file of %d bytes",
				sh.UUID, seal.FileSize(int64(sh.PoolSize)), p.name(), size)
		}
		return nil
	}
	h, err := layout.DecodeHeader(b)
	if err != nil {
		var err1 error
		if h, err1 = layout.DecodeHeader(b[layout.SlotOff(1):]); err1 != nil {
			return fmt.Errorf("no valid pool header: %w", errors.Join(err, err1))
		}
	}
	if h.UUID != p.uuid || int64(h.Size) != size {
		return fmt.Errorf("header of pool %x of %d bytes, want pool %s of %d bytes", h.UUID, h.Size, p.name(), size)
	}
	return nil
}

// install makes the consistent copy the pool file: it is made durable and
// checked, the install is journaled, then the copy is renamed over the
// pool file and the fencing state records the new position.
func (p *replicaPool) install(s *snapshot) error {
	if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
		return err
	}
	if err := p.checkHeader(s.f, s.size); err != nil {
		return protocolError("snapshot not installed: %v", err)
	}
	if err := unix.Flock(int(s.f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock snapshot file: %w", err)
	}
	if err := p.journal(record{kind: recordInstall, seen: p.seen, epoch: s.epoch, seq: s.applied, chain: s.chain}); err != nil {
		return err
	}
	if err := os.Rename(s.f.Name(), p.poolPath()); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(p.base)); err != nil {
		return err
	}
	f := s.f
	s.f = nil
	p.epoch, p.seq, p.chain, p.damaged = s.epoch, s.applied, s.chain, nil
	if err := p.adopt(f); err != nil {
		return err
	}
	return p.writeFence()
}

// abort discards a snapshot that was not installed.
func (p *replicaPool) abort(s *snapshot) {
	if s == nil || s.f == nil {
		return
	}
	s.f.Close()
	os.Remove(p.snapPath())
	s.f = nil
}

// copyFile copies the first size bytes of src to dst in the kernel
// (copy_file_range), falling back to reading and writing where the file
// systems cannot. Writing dst from the pool's mapping instead would fault
// on every page not touched yet, which under shadow paging costs
// microseconds apiece.
func copyFile(dst, src *os.File, size int64) error {
	var off int64
	for off < size {
		in, out := off, off
		k, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(min(size-off, 1<<30)), 0)
		if err != nil || k == 0 {
			break
		}
		off += int64(k)
	}
	if off == size {
		return nil
	}
	_, err := io.Copy(io.NewOffsetWriter(dst, off), io.NewSectionReader(src, off, size-off))
	return err
}
