package mirror

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/internal/fsx"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// replicaPool is one replicated pool on a replica: its pool file, named by
// the pool's UUID, its journal and its fencing state. It is used by one
// session at a time; its files are open only while a session uses it
// (between reopen and release).
//
// Files in the server's directory, for a pool whose UUID is U (in hex):
//
//	U.pool        the replica: a valid pool at some commit of the primary
//	U.journal.0   journal records, see journal.go
//	U.journal.1
//	U.fence       the fencing state, see fencestate.go
//	U.snap        a snapshot being received; renamed to U.pool once whole
type replicaPool struct {
	uuid [16]byte
	base string // directory and hex UUID: the files' common prefix
	log  *slog.Logger
	j    *journal
	// pool is the pool file, locked so that nobody opens it with the heap
	// API while the server may write it; nil while released or before a
	// first snapshot. mem maps it shared: a batch's runs are copied in and
	// made durable with one fdatasync, which writes back pages dirtied
	// through the mapping, rather than a write system call per run.
	pool *os.File
	mem  []byte
	// size is the size of the pool file, zero when the replica holds no
	// usable copy.
	size int64
	// unsynced is set while runs copied into mem may not be durable yet:
	// the batch they belong to is durable in the journal, whose newest
	// record recovery redoes, and the pool file is synced before the next
	// record is written (see syncPool).
	unsynced bool
	// seen is the newest epoch seen; epoch, seq and chain say which batch
	// of which primary incarnation the pool file holds the state after.
	// Epoch 0 means the position is unknown: any primary sends a copy.
	seen, epoch, seq uint64
	chain            wire.Chain
	// fence is the fencing state as last written.
	fence fence
	// damaged, if set, says why the pool file failed verification.
	damaged error
	chainer wire.Chainer
}

func (p *replicaPool) poolPath() string { return p.base + ".pool" }
func (p *replicaPool) snapPath() string { return p.base + ".snap" }
func (p *replicaPool) name() string     { return filepath.Base(p.base) }

// newReplicaPool returns the replicated pool with the given UUID in dir,
// not yet recovered.
func newReplicaPool(dir string, uuid [16]byte, log *slog.Logger) *replicaPool {
	base := filepath.Join(dir, hex.EncodeToString(uuid[:]))
	return &replicaPool{uuid: uuid, base: base, log: log, j: newJournal(base, record{})}
}

// openReplicaPool opens the replicated pool with the given UUID in dir and
// finishes what a crash interrupted: the newest journal record is redone,
// and a snapshot that was not installed is discarded. The pool's files
// are left open.
func openReplicaPool(dir string, uuid [16]byte, log *slog.Logger) (*replicaPool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := newReplicaPool(dir, uuid, log)
	if err := p.recover(); err != nil {
		p.release()
		return nil, fmt.Errorf("replica of pool %s: %w", p.name(), err)
	}
	return p, nil
}

// recover reads the fencing state and the journal, and finishes what the
// newest journal record describes.
func (p *replicaPool) recover() error {
	f, fenced, err := readFence(p.base, func(slot int, err error) {
		p.log.Error("replica: a copy of the fencing state is damaged; using the other", "pool", p.name(), "slot", slot, "err", err)
	})
	if err != nil {
		return fmt.Errorf("%w; the pool is not served until its fencing is reset (pmemctl replica reset-fencing)", err)
	}
	r, ok, err := readJournal(p.base, func(path string, err error) {
		p.log.Warn("replica: invalid journal record", "pool", p.name(), "file", path, "err", err)
	})
	if err != nil {
		return err
	}
	_, statErr := os.Stat(p.poolPath())
	if !fenced && (ok || statErr == nil) {
		return fmt.Errorf("fencing state %s is missing; the pool is not served until its fencing is reset (pmemctl replica reset-fencing)", fencePath(p.base))
	}
	p.j = newJournal(p.base, r)
	p.fence = f
	p.seen = max(f.seen, r.seen)
	fromJournal := ok && !before(r.epoch, r.seq, f.epoch, f.seq)
	if fromJournal {
		p.epoch, p.seq, p.chain = r.epoch, r.seq, r.chain
	} else if f.epoch != 0 {
		p.log.Error("replica: the journal is lost or older than the fencing state; the next primary will send a whole copy",
			"pool", p.name(), "fence_epoch", f.epoch, "fence_seq", f.seq)
	}
	if fromJournal && r.kind == recordInstall {
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
	// Space is reserved once at start: a file copied in sparse, or
	// shrunk, faults on a full disk when written through the mapping.
	if err := p.openPool(true); err != nil {
		return err
	}
	if p.pool == nil {
		if fromJournal && r.kind != recordMark {
			p.log.Error("replica: the journal says the pool file holds a batch, but there is none; the next primary will send a whole copy",
				"pool", p.name(), "epoch", r.epoch, "seq", r.seq)
		}
		p.unknownPosition()
		return nil
	}
	if !fromJournal {
		p.unknownPosition()
		return nil
	}
	if r.kind == recordBatch {
		return p.redo(r.payload)
	}
	return nil
}

// before reports whether position (e1, s1) comes before (e2, s2).
func before(e1, s1, e2, s2 uint64) bool { return e1 < e2 || e1 == e2 && s1 < s2 }

// unknownPosition makes any primary send a whole copy: a pool file that
// cannot be placed in a primary's history is only a base for a delta.
func (p *replicaPool) unknownPosition() {
	p.epoch, p.seq, p.chain = 0, 0, wire.Chain{}
}

// validPoolSize returns an error if size cannot be a pool's.
func validPoolSize(size int64) error {
	if size < layout.MinPoolSize || size%4096 != 0 {
		return fmt.Errorf("pool size %d is not a multiple of 4096 bytes of at least %d", size, layout.MinPoolSize)
	}
	return nil
}

// openPool opens, locks and maps the pool file if there is one, reserving
// its disk space first if alloc is set. A file of a size no pool has is
// left alone as damaged: the next snapshot replaces it.
func (p *replicaPool) openPool(alloc bool) error {
	f, err := os.OpenFile(p.poolPath(), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		p.size = 0
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if err := validPoolSize(fi.Size()); err != nil {
		f.Close()
		p.damaged = fmt.Errorf("pool file %s: %w", p.poolPath(), err)
		p.size = 0
		return nil
	}
	if alloc {
		if err := fsx.Allocate(f, fi.Size()); err != nil {
			f.Close()
			return err
		}
	}
	return p.adopt(f)
}

// reopen opens the files of a released pool for a session.
func (p *replicaPool) reopen() error {
	if p.size == 0 || p.pool != nil {
		return nil
	}
	if err := p.openPool(false); err != nil {
		return fmt.Errorf("replica of pool %s: %w", p.name(), err)
	}
	if p.pool == nil {
		p.unknownPosition()
	}
	return nil
}

// release syncs and closes the pool's files.
func (p *replicaPool) release() error {
	err := p.syncPool()
	return errors.Join(err, p.j.close(), p.closePool())
}

// adopt makes f, whose space is allocated, the pool file: locked, so that
// the heap API cannot open it while the server writes it, and mapped. The
// file it replaces, if any, is closed.
func (p *replicaPool) adopt(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lock replica pool file %s: %w", f.Name(), err)
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

// grow makes the pool file size bytes long, its space allocated and its
// new size durable, and maps it whole: the primary grew the pool in the
// replica's epoch, and its next batches write the new part, which reads
// as zeros until then, as on the primary. A file longer than its pool's
// header says is a valid pool (an interrupted growth leaves one on the
// primary too), so a crash at any point leaves a usable copy.
func (p *replicaPool) grow(size int64) error {
	if err := validPoolSize(size); err != nil {
		return protocolError("growth of pool %s: %v", p.name(), err)
	}
	if p.pool == nil {
		return nil
	}
	if err := fsx.Allocate(p.pool, size); err != nil {
		return fmt.Errorf("grow replica pool file: %w", err)
	}
	if err := p.pool.Sync(); err != nil {
		return fmt.Errorf("sync replica pool file after growing it: %w", err)
	}
	mem, err := unix.Mmap(int(p.pool.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map grown replica pool file %s: %w", p.poolPath(), err)
	}
	// Pages written through the old mapping stay in the file's cache:
	// syncPool's fdatasync still finds them.
	if err := unix.Munmap(p.mem); err != nil {
		unix.Munmap(mem)
		return err
	}
	p.mem, p.size = mem, size
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
	if err := p.write(b.Runs); err != nil {
		return fmt.Errorf("journal batch: %w", err)
	}
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
// mapping; syncPool makes them durable. A fault on the mapping (the file
// shrunk, or an I/O error paging it in) is an error, not a crash.
func (p *replicaPool) write(runs []wire.Run) error {
	p.unsynced = true
	err := fsx.CatchFault(nil, func() error {
		for _, r := range runs {
			copy(p.mem[r.Off:], r.Data)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write replica pool file %s: %w: %w", p.poolPath(), err, ErrReplicaIO)
	}
	return nil
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

// writeFence records the fencing state durably: the newest epoch seen and
// the pool's position.
func (p *replicaPool) writeFence() error {
	f := p.fence
	f.seen, f.epoch, f.seq, f.chain = p.seen, p.epoch, p.seq, p.chain
	if err := writeFence(p.base, &f); err != nil {
		return err
	}
	p.fence = f
	return nil
}

// noteEpoch records durably that epoch was seen, if it is newer than any
// seen so far.
func (p *replicaPool) noteEpoch(epoch uint64) error {
	if epoch <= p.seen {
		return nil
	}
	old := p.seen
	p.seen = epoch
	if err := p.writeFence(); err != nil {
		p.seen = old
		return err
	}
	return nil
}

// applyBatch applies the batch of the given epoch and sequence number,
// with the given payload (whose xxhash64 is sum, or zero to compute it)
// and decoded content,
// atomically: journal, apply, then the state is (epoch, seq) and the chain
// is extended. The batch must follow the pool's own newest batch.
func (p *replicaPool) applyBatch(epoch, seq uint64, payload []byte, sum uint64, b wire.Batch) error {
	if p.pool == nil {
		return protocolError("batch %d for a pool the replica has no copy of", seq)
	}
	if b.Prev != p.chain {
		return divergedError("batch %d of epoch %d does not follow the replica's batch %d: chain %v, the batch follows %v",
			seq, epoch, p.seq, p.chain, b.Prev)
	}
	if err := p.checkRuns(b.Runs, p.size); err != nil {
		return err
	}
	if sum == 0 {
		sum = xxhash.Sum64(payload)
	}
	chain := p.chainer.Next(epoch, seq, sum)
	if err := p.journal(record{kind: recordBatch, seen: p.seen, epoch: epoch, seq: seq, chain: chain, payload: payload, sum: sum}); err != nil {
		return err
	}
	p.epoch, p.seq, p.chain = epoch, seq, chain
	return p.write(b.Runs)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
