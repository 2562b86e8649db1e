package mirror

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// replicaPool is one replicated pool on a replica: its pool file, named by
// the pool's UUID, and its journal. It is used by one session at a time.
//
// Files in the server's directory, for a pool whose UUID is U (in hex):
//
//	U.pool        the replica: a valid pool at some commit of the primary
//	U.journal.0   journal records, see journal.go
//	U.journal.1
//	U.snap        a snapshot being received; renamed to U.pool once whole
type replicaPool struct {
	uuid [16]byte
	base string // directory and hex UUID: the files' common prefix
	j    *journal
	// pool is the pool file, locked so that nobody opens it with the heap
	// API while the server may write it; nil before a first snapshot. mem
	// maps it shared: a batch's runs are copied in and made durable with
	// one fdatasync, which writes back pages dirtied through the mapping,
	// rather than a write system call per run.
	pool *os.File
	mem  []byte
	size int64
	// unsynced is set while runs copied into mem may not be durable yet:
	// the batch they belong to is durable in the journal, whose newest
	// record recovery redoes, and the pool file is synced before the next
	// record is written (see syncPool).
	unsynced bool
	// seen is the newest epoch seen; epoch and seq say which batch of which
	// primary incarnation the pool file holds the state after.
	seen, epoch, seq uint64
}

func (p *replicaPool) poolPath() string { return p.base + ".pool" }
func (p *replicaPool) snapPath() string { return p.base + ".snap" }
func (p *replicaPool) name() string     { return filepath.Base(p.base) }

// openReplicaPool opens the replicated pool with the given UUID in dir and
// finishes what a crash interrupted: the newest journal record is redone,
// and a snapshot that was not installed is discarded.
func openReplicaPool(dir string, uuid [16]byte) (*replicaPool, error) {
	p := &replicaPool{uuid: uuid, base: filepath.Join(dir, hex.EncodeToString(uuid[:]))}
	j, err := openJournal(p.base)
	if err != nil {
		return nil, err
	}
	p.j = j
	if err := p.recover(); err != nil {
		p.close()
		return nil, fmt.Errorf("replica of pool %s: %w", p.name(), err)
	}
	return p, nil
}

func (p *replicaPool) recover() error {
	r := p.j.last
	p.seen, p.epoch, p.seq = r.seen, r.epoch, r.seq
	if r.kind == recordInstall {
		if err := os.Rename(p.snapPath(), p.poolPath()); err == nil {
			if err := syncDir(filepath.Dir(p.base)); err != nil {
				return err
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(p.snapPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(p.poolPath(), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if r.kind == recordBatch || r.kind == recordInstall {
			return fmt.Errorf("journal says the pool file holds batch %d of epoch %d, but there is none", r.seq, r.epoch)
		}
		// A pool file is made only by installing a snapshot: there is none
		// yet, whatever epoch was seen.
		p.epoch, p.seq = 0, 0
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.adopt(f); err != nil {
		return err
	}
	if r.counter == 0 {
		// A pool file without any journal record cannot be placed in the
		// primary's history: make the primary send a whole copy.
		p.epoch, p.seq = 0, 0
	}
	if r.kind == recordBatch {
		return p.redo(r.payload)
	}
	return nil
}

// adopt makes f the pool file: locked, so that the heap API cannot open it
// while the server writes it, and mapped. The file it replaces, if any, is
// closed.
func (p *replicaPool) adopt(f *os.File) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lock replica pool file %s: %w", f.Name(), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return fmt.Errorf("map replica pool file %s: %w", f.Name(), err)
	}
	if err := p.closePool(); err != nil {
		unix.Munmap(mem)
		f.Close()
		return err
	}
	p.pool, p.mem, p.size = f, mem, fi.Size()
	return nil
}

// closePool unmaps and closes the pool file.
func (p *replicaPool) closePool() error {
	if p.pool == nil {
		return nil
	}
	err := errors.Join(unix.Munmap(p.mem), p.pool.Close())
	p.pool, p.mem = nil, nil
	return err
}

// redo re-applies the batch of a journal record to the pool file.
func (p *replicaPool) redo(payload []byte) error {
	b, err := wire.DecodeBatch(payload, nil)
	if err != nil {
		return fmt.Errorf("journal batch: %w", err)
	}
	if err := p.checkRuns(b.Runs, p.size); err != nil {
		return fmt.Errorf("journal batch: %w", err)
	}
	p.write(b.Runs)
	return p.syncPool()
}

// checkRuns returns an error if a run lies outside the pool.
func (p *replicaPool) checkRuns(runs []wire.Run, size int64) error {
	for _, r := range runs {
		if r.Off+uint64(len(r.Data)) > uint64(size) {
			return protocolError("run [%d, +%d) outside the pool of %d bytes", r.Off, len(r.Data), size)
		}
	}
	return nil
}

// write copies runs, checked to lie in the pool, into the pool file's
// mapping; syncPool makes them durable.
func (p *replicaPool) write(runs []wire.Run) {
	for _, r := range runs {
		copy(p.mem[r.Off:], r.Data)
	}
	p.unsynced = true
}

// syncPool makes what write copied durable. It must happen before the
// next journal record is written, since recovery redoes only the newest
// one; the server does it right after acknowledging a batch, off the
// commit's path, since the batch was durable in the journal already.
func (p *replicaPool) syncPool() error {
	if !p.unsynced || p.pool == nil {
		return nil
	}
	if err := unix.Fdatasync(int(p.pool.Fd())); err != nil {
		return fmt.Errorf("sync replica pool file: %w", err)
	}
	p.unsynced = false
	return nil
}

// journal writes r to the journal, once the pool file holds durably the
// batch of the record before.
func (p *replicaPool) journal(r record) error {
	if err := p.syncPool(); err != nil {
		return err
	}
	return p.j.write(r)
}

// noteEpoch records durably that epoch was seen, if it is newer than any
// seen so far.
func (p *replicaPool) noteEpoch(epoch uint64) error {
	if epoch <= p.seen {
		return nil
	}
	if err := p.journal(record{kind: recordMark, seen: epoch, epoch: p.epoch, seq: p.seq}); err != nil {
		return err
	}
	p.seen = epoch
	return nil
}

// applyBatch applies the batch with the given payload (whose xxhash64 is
// sum) and runs atomically: journal, apply, then the state is (epoch,
// seq).
func (p *replicaPool) applyBatch(epoch, seq uint64, payload []byte, sum uint64, runs []wire.Run) error {
	if p.pool == nil {
		return protocolError("batch %d for a pool the replica has no copy of", seq)
	}
	if err := p.checkRuns(runs, p.size); err != nil {
		return err
	}
	if err := p.journal(record{kind: recordBatch, seen: p.seen, epoch: epoch, seq: seq, payload: payload, sum: sum}); err != nil {
		return err
	}
	p.write(runs)
	p.epoch, p.seq = epoch, seq
	return nil
}

// snapshot is a copy of the pool being received into the snapshot file.
type snapshot struct {
	f     *os.File
	size  int64
	epoch uint64
	// applied is the batch whose state the file holds once consistent;
	// consistentAt is that batch, zero until the copy's end.
	applied, consistentAt uint64
}

// beginSnapshot starts receiving a copy of the pool taken after batch
// base of epoch. A delta copy starts from the replica's own pool file;
// the chunks received replace what differs.
func (p *replicaPool) beginSnapshot(epoch, base uint64, size int64, delta bool) (*snapshot, error) {
	if delta && (p.pool == nil || p.size != size) {
		return nil, protocolError("delta snapshot of a pool the replica has no copy of")
	}
	// The mark makes a snapshot file left over by a crash from here on
	// one that recovery discards rather than installs.
	if err := p.journal(record{kind: recordMark, seen: p.seen, epoch: p.epoch, seq: p.seq}); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p.snapPath(), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	if delta {
		if _, err := f.WriteAt(p.mem, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("start a delta snapshot from the pool: %w", err)
		}
	}
	return &snapshot{f: f, size: size, epoch: epoch, applied: base}, nil
}

// chunk writes part of the copy.
func (s *snapshot) chunk(off uint64, data []byte) error {
	if s.consistentAt != 0 {
		return protocolError("snapshot chunk after the snapshot's end")
	}
	if off+uint64(len(data)) > uint64(s.size) || off+uint64(len(data)) < off {
		return protocolError("snapshot chunk [%d, +%d) outside the pool of %d bytes", off, len(data), s.size)
	}
	_, err := s.f.WriteAt(data, int64(off))
	return err
}

// end records the batch after which the copy is consistent.
func (s *snapshot) end(at uint64) error {
	if s.consistentAt != 0 || at <= s.applied {
		return protocolError("snapshot end at batch %d, snapshot taken after batch %d", at, s.applied)
	}
	s.consistentAt = at
	return nil
}

// snapBatch applies a batch to the copy and installs the copy once it
// reaches the batch it is consistent at. It reports whether it installed.
func (p *replicaPool) snapBatch(s *snapshot, seq uint64, runs []wire.Run) (bool, error) {
	if s.consistentAt == 0 {
		return false, protocolError("batch %d in the middle of a snapshot", seq)
	}
	if seq != s.applied+1 {
		return false, protocolError("batch %d after batch %d", seq, s.applied)
	}
	if err := p.checkRuns(runs, s.size); err != nil {
		return false, err
	}
	for _, r := range runs {
		if _, err := s.f.WriteAt(r.Data, int64(r.Off)); err != nil {
			return false, err
		}
	}
	s.applied = seq
	if seq < s.consistentAt {
		return false, nil
	}
	return true, p.install(s)
}

// install makes the consistent copy the pool file: it is made durable, the
// install is journaled, then the copy is renamed over the pool file.
func (p *replicaPool) install(s *snapshot) error {
	if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
		return err
	}
	if err := unix.Flock(int(s.f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock snapshot file: %w", err)
	}
	if err := p.journal(record{kind: recordInstall, seen: p.seen, epoch: s.epoch, seq: s.applied}); err != nil {
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
	p.epoch, p.seq = s.epoch, s.applied
	return p.adopt(f)
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

func (p *replicaPool) close() error {
	err := p.syncPool()
	if p.j != nil {
		err = errors.Join(err, p.j.close())
	}
	return errors.Join(err, p.closePool())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
