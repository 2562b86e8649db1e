package heap

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/goroutine"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// lineSize is the unit a snapshot copies: a cache line.
const lineSize = 64

// keptRegion is the granularity at which a snapshot lists kept lines.
const keptRegion = 64 << 10

// arenaBlock is the size of the blocks a snapshot keeps lines in: a huge
// page (see snapMemory).
const arenaBlock = hugePage

// SnapshotOptions configures Snapshot. The zero value keeps up to 64 MiB
// of copied lines in memory and spills the rest to a file in os.TempDir.
type SnapshotOptions struct {
	// MemLimit is how many bytes of copied lines the snapshot keeps in
	// memory before it spills to a temporary file; 0 means 64 MiB, a
	// negative value spills every line. Memory is taken in 2 MiB blocks,
	// one for lines and one for their index at first, which the heap
	// reuses for later snapshots (see Heap.Snapshot's memory in the
	// README).
	MemLimit int64
	// SpillDir is where the spill file goes; empty means os.TempDir().
	SpillDir string
	// Exact presents the pool's bytes exactly as they are, as a crash at
	// that commit would leave them (the open mark set, the last commit's
	// log live), rather than as a clean Close would leave them. A
	// replication mirror sends such an image to a replica, whose later
	// batches change those words too.
	Exact bool
	// Ranges, if set, limits the snapshot to these ranges of the pool,
	// sorted and disjoint: only their lines are kept, and only reads
	// within them show the image as of the snapshot. A replication mirror
	// keeps in this way the lines of a batch that it reads after later
	// commits began.
	Ranges []Extent
	// OnFull, if set, is called instead of spilling when keeping one more
	// line would pass MemLimit. It runs on the goroutine of the
	// transaction about to change the line, before the change: the
	// snapshot still reads as of its commit while OnFull runs, and is
	// closed once it returns.
	OnFull func()
}

// Extent is a range of pool bytes [Off, Off+Len).
type Extent struct {
	Off, Len int64
}

// SnapshotStats says what a snapshot keeps.
type SnapshotStats struct {
	// Lines is the number of 64-byte lines copied because a transaction
	// changed them after the snapshot was taken.
	Lines int
	// MemBytes and SpilledBytes are what those copies take in memory and
	// in the spill file.
	MemBytes, SpilledBytes int64
}

// Snapshot is a point-in-time view of a pool: its bytes as of the last
// commit before Snapshot was called, while Update transactions go on. It
// copies a 64-byte line the first time a transaction changes it, so it
// costs memory in proportion to the lines written while it is open, not to
// the pool's size. Its image is that of a cleanly closed pool: it opens
// without recovery and passes the offline check.
//
// A snapshot is volatile: a crash loses it and leaves the pool as it was.
// It is closed by Close, and by the heap's Close. A store made outside any
// transaction is not seen by the snapshot's copy-on-write, as it is not by
// the undo log.
type Snapshot struct {
	h    *Heap
	size int64
	// mem is the pool's mapping up to size, as of the snapshot: a growth
	// changes the heap's view (h.mem) under a reader, but never moves
	// the mapping.
	mem []byte
	// patch holds the 8-byte words the image shows in place of the
	// pool's: the open mark cleared and the log retired, as a clean
	// Close leaves them.
	patch map[int64]uint64

	// mu orders the copy of a line before a transaction changes it with
	// the overlay of kept lines on what a read copied from the pool.
	mu sync.Mutex
	// live is held for reading while a read copies from the pool, and for
	// writing by drop, so that the pool is not unmapped under a copy.
	live sync.RWMutex
	idx  keptIndex
	// ranges limits the snapshot; rangeSlot is the slot of each one's
	// first line in idx.
	ranges    []Extent
	rangeSlot []int64
	onFull    func()
	// full is set when OnFull is due: nothing more is kept.
	full bool
	// behind is where a backup that reads the image once, in order, has
	// got to: lines below it are never read again, and a transaction
	// keeps none of them. once says that reads advance it.
	behind atomic.Int64
	once   bool
	// arena holds the copied lines in blocks of arenaBlock bytes (see
	// arenaLine), so that growing it never copies what it holds; used
	// counts its bytes.
	arena [][]byte
	fill  int // bytes used in the last block
	used  int64
	// zeroLo and zeroHi bound the undo log's entries, which the image of
	// a snapshot shown cleanly closed presents as zeros (a retired log
	// needs none), so that transactions copy none of the log's lines.
	zeroLo, zeroHi int64
	limit          int64
	spill          *os.File
	spilled        int64
	dir            string
	err            error // a spill that failed: every read returns it
	closed         error
}

// Snapshot returns a point-in-time view of the pool as of the last commit.
// It waits for a running Update; inside a transaction of this heap it
// returns ErrNestedTx.
func (h *Heap) Snapshot(opts *SnapshotOptions) (*Snapshot, error) {
	if opts == nil {
		opts = &SnapshotOptions{}
	}
	if h.lock.heldByCaller() {
		// Allowed only from a commit hook: a commit boundary under the
		// caller's own writer lock. Inside a transaction it is not one.
		if !h.inHooks || h.lock.writer.Load() != goroutine.ID() {
			return nil, nested()
		}
		return h.snapshotLocked(opts)
	}
	if err := h.lock.lock(context.Background()); err != nil {
		return nil, err
	}
	defer h.lock.unlock()
	return h.snapshotLocked(opts)
}

// snapshotLocked takes a snapshot; the writer lock is held.
func (h *Heap) snapshotLocked(opts *SnapshotOptions) (*Snapshot, error) {
	if h.closed {
		return nil, pmemgo.ErrClosed
	}
	if h.broken != nil {
		return nil, h.broken
	}
	s := &Snapshot{
		h: h, size: int64(len(h.mem)), mem: h.mem, limit: opts.MemLimit, dir: opts.SpillDir,
		onFull: opts.OnFull,
	}
	if opts.Ranges != nil {
		if err := checkExtents(opts.Ranges, s.size); err != nil {
			return nil, err
		}
		s.ranges = slices.Clone(opts.Ranges)
		s.rangeSlot, s.idx.slots = rangeSlots(s.ranges)
	} else {
		s.idx.slots = (s.size + lineSize - 1) / lineSize
	}
	s.idx.mem = &h.snapMem
	if s.limit == 0 {
		s.limit = 64 << 20
	}
	if !opts.Exact {
		s.patch = cleanPatch(h)
		hdr := &h.pool.Header
		s.zeroLo, s.zeroHi = int64(hdr.LogOff)+layout.LogEntriesOff, int64(hdr.LogOff+hdr.LogSize)
	}
	h.snapMu.Lock()
	defer h.snapMu.Unlock()
	list := append(append([]*Snapshot(nil), h.snapList()...), s)
	h.snaps.Store(&list)
	return s, nil
}

// cleanPatch returns the words a clean Close would leave different from
// the mapping of an open pool that was written to: the open mark cleared,
// and the last commit's log retired (its content is in place: the commit
// fenced it before Update returned).
func cleanPatch(h *Heap) map[int64]uint64 {
	if layout.OpenMark(h.mem[layout.OpenMarkOff:]) == 0 {
		return nil
	}
	hdr := &h.pool.Header
	log := h.mem[hdr.LogOff : hdr.LogOff+hdr.LogSize]
	gen, err := layout.LogGen(log)
	if err != nil {
		return nil
	}
	var w [layout.LogGenOff + 8]byte
	layout.SetLogGen(w[:], layout.RetireGen(gen))
	return map[int64]uint64{
		layout.OpenMarkOff:                   0,
		int64(hdr.LogOff + layout.LogGenOff): binary.LittleEndian.Uint64(w[layout.LogGenOff:]),
	}
}

func (h *Heap) snapList() []*Snapshot {
	if p := h.snaps.Load(); p != nil {
		return *p
	}
	return nil
}

// cow keeps, for every open snapshot, the lines of [off, off+n) that a
// transaction is about to change. It costs one atomic load when no
// snapshot is open.
func (h *Heap) cow(off, n uint64) {
	h.writeHooks.call(off, n)
	p := h.snaps.Load()
	if p == nil || n == 0 {
		return
	}
	for _, s := range *p {
		if s.keep(off, n) {
			s.onFull()
			s.end(fmt.Errorf("%d bytes of kept lines reached: %w", s.limit, pmemgo.ErrClosed))
		}
	}
}

// keep keeps the lines of [off, off+n) not kept yet. It reports whether
// OnFull is due instead.
func (s *Snapshot) keep(off, n uint64) (full bool) {
	if int64(off) >= s.zeroLo && int64(off+n) <= s.zeroHi {
		return false
	}
	// A pool that grew after the snapshot was taken changes its new part
	// too, which the snapshot's image does not hold.
	if int64(off) >= s.size {
		return false
	}
	n = min(n, uint64(s.size)-off)
	if b := uint64(s.behind.Load()); off < b {
		if off+n <= b {
			return false
		}
		off, n = b, off+n-b
	}
	first, last := uint32(off/lineSize), uint32((off+n-1)/lineSize)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed != nil || s.err != nil || s.full {
		return false
	}
	if s.ranges == nil {
		return s.keepLines(first, last, int64(first))
	}
	i, _ := slices.BinarySearchFunc(s.ranges, int64(first)*lineSize, func(e Extent, at int64) int {
		return cmp.Compare(e.Off+e.Len, at+1)
	})
	for ; i < len(s.ranges) && s.ranges[i].Off <= int64(last)*lineSize+lineSize-1; i++ {
		e := s.ranges[i]
		lo, hi := max(first, uint32(e.Off/lineSize)), min(last, uint32((e.Off+e.Len-1)/lineSize))
		if s.keepLines(lo, hi, s.rangeSlot[i]+int64(lo)-e.Off/lineSize) {
			return true
		}
	}
	return false
}

// keepLines keeps the lines first to last, whose slots start at slot,
// that are not kept yet; s.mu is held. It reports whether OnFull is due
// instead.
func (s *Snapshot) keepLines(first, last uint32, slot int64) (full bool) {
	for l := first; l <= last; l, slot = l+1, slot+1 {
		if s.idx.has(slot) {
			continue
		}
		line := s.mem[uint64(l)*lineSize : uint64(l+1)*lineSize]
		var pos int64
		var err error
		switch {
		case s.used+lineSize <= s.limit:
			if pos, err = s.arenaLine(); err == nil {
				copy(s.arena[pos/arenaBlock][pos%arenaBlock:], line)
				s.used += lineSize
			}
		case s.onFull != nil:
			s.full = true
			return true
		default:
			if pos, err = s.spillLine(line); err != nil {
				err = fmt.Errorf("spilling a copied line: %w", err)
			}
		}
		if err == nil {
			err = s.idx.add(l, slot, pos, s.size)
		}
		if err != nil {
			// Every read of the snapshot returns it from now on; the
			// transaction goes on.
			s.err = fmt.Errorf("snapshot: %w", err)
			return false
		}
	}
	return false
}

// spillLine writes line to the spill file and returns its position there,
// as a kept line's position says it: -1-offset.
func (s *Snapshot) spillLine(line []byte) (int64, error) {
	if s.spill == nil {
		f, err := os.CreateTemp(s.dir, "pmemgo-snapshot-*")
		if err != nil {
			return 0, err
		}
		// The file is never opened again by name: removing it now means
		// nothing is left behind, whatever happens to the process.
		os.Remove(f.Name())
		s.spill = f
	}
	if _, err := s.spill.WriteAt(line, s.spilled); err != nil {
		return 0, err
	}
	s.spilled += lineSize
	return -1 - (s.spilled - lineSize), nil
}

// Size returns the size of the pool image.
func (s *Snapshot) Size() int64 { return s.size }

// Stats says what the snapshot keeps.
func (s *Snapshot) Stats() SnapshotStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SnapshotStats{Lines: int(s.idx.n), MemBytes: s.used, SpilledBytes: s.spilled}
}

// ReadAt reads the pool image as of the snapshot.
func (s *Snapshot) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("snapshot: negative offset %d", off)
	}
	n := 0
	for n < len(p) && off+int64(n) < s.size {
		chunk := min(len(p)-n, readChunk, int(s.size-off-int64(n)))
		if err := s.read(p[n:n+chunk], off+int64(n)); err != nil {
			return n, err
		}
		n += chunk
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readChunk bounds how long a read holds the lock that a transaction's
// first change of a line waits for.
const readChunk = 256 << 10

// read fills p with the image from offset off.
//
// The bulk copy runs without s.mu, so that a transaction's first change of
// a line never waits for it: a line changed during the copy was kept
// (under s.mu) before it was changed, so the overlay, taken under s.mu
// after the copy, puts its old content back. live keeps the pool mapped
// meanwhile.
func (s *Snapshot) read(p []byte, off int64) error {
	return s.unlockedCopy(func() error {
		// Where the mapping shares the file's pages, reading the file
		// copies from them in the kernel: a pass over a pool mapped a
		// moment ago (a guardian's save, a new replica's snapshot) then
		// takes no page fault on each page, which under shadow paging
		// costs microseconds apiece.
		if fa, ok := s.h.dev.(device.FileAccess); ok {
			return fa.ReadAt(p, off)
		}
		copy(p, s.mem[off:off+int64(len(p))])
		return nil
	}, func() error { return s.overlay(p, off) })
}

// unlockedCopy runs bulk, which copies from the pool without s.mu, then
// fix, which puts the kept lines and patched words over what bulk copied,
// under s.mu. live keeps the pool mapped throughout.
func (s *Snapshot) unlockedCopy(bulk, fix func() error) error {
	s.live.RLock()
	defer s.live.RUnlock()
	s.mu.Lock()
	err := s.usable()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := bulk(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	return fix()
}

func (s *Snapshot) usable() error {
	if s.closed != nil {
		return s.closed
	}
	return s.err
}

// overlay puts into p, the pool's bytes from off, the lines kept for the
// snapshot and the patched words. s.mu is held.
func (s *Snapshot) overlay(p []byte, off int64) error {
	end := off + int64(len(p))
	first, last := off/lineSize, (end-1)/lineSize
	for r := off / keptRegion; r*keptRegion < end; r++ {
		err := s.idx.each(r, func(k keptAt) error {
			if int64(k.line) < first || int64(k.line) > last {
				return nil
			}
			return s.copyLine(p, off, int64(k.line), k.pos)
		})
		if err != nil {
			return err
		}
	}
	s.patchZeros(p, off)
	return nil
}

// patchZeros puts into p, the image from off, the log's entries as zeros
// and the patched words.
func (s *Snapshot) patchZeros(p []byte, off int64) {
	end := off + int64(len(p))
	if lo, hi := max(off, s.zeroLo), min(end, s.zeroHi); lo < hi {
		clear(p[lo-off : hi-off])
	}
	for at, v := range s.patch {
		if at >= off && at+8 <= end {
			binary.LittleEndian.PutUint64(p[at-off:], v)
		}
	}
}

// copyLine puts the kept copy of line l into p, which starts at off.
func (s *Snapshot) copyLine(p []byte, off, l, pos int64) error {
	var line []byte
	if pos >= 0 {
		line = s.arena[pos/arenaBlock][pos%arenaBlock:][:lineSize]
	} else {
		var buf [lineSize]byte
		if _, err := s.spill.ReadAt(buf[:], -1-pos); err != nil {
			return fmt.Errorf("snapshot: reading a spilled line: %w", err)
		}
		line = buf[:]
	}
	lo, hi := l*lineSize, (l+1)*lineSize
	from, to := max(lo, off), min(hi, off+int64(len(p)))
	copy(p[from-off:to-off], line[from-lo:to-lo])
	return nil
}

// WriteTo writes the whole pool image to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, readChunk)
	var n int64
	for n < s.size {
		k := min(int64(readChunk), s.size-n)
		m, err := s.writeChunk(w, buf[:k], n)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeChunk writes len(buf) bytes of the image from off to w; nothing is
// locked while w writes.
func (s *Snapshot) writeChunk(w io.Writer, buf []byte, off int64) (int, error) {
	if err := s.read(buf, off); err != nil {
		return 0, err
	}
	s.readPast(off + int64(len(buf)))
	return w.Write(buf)
}

// Close frees what the snapshot kept. Transactions stop copying lines
// for it.
func (s *Snapshot) Close() error {
	return s.end(pmemgo.ErrClosed)
}

// end takes the snapshot off the heap's list and drops it for why.
func (s *Snapshot) end(why error) error {
	h := s.h
	h.snapMu.Lock()
	var rest []*Snapshot
	for _, o := range h.snapList() {
		if o != s {
			rest = append(rest, o)
		}
	}
	if len(rest) == 0 {
		h.snaps.Store(nil)
	} else {
		h.snaps.Store(&rest)
	}
	h.snapMu.Unlock()
	return s.drop(why)
}

// drop ends the snapshot: reads return why from now on.
func (s *Snapshot) drop(why error) error {
	s.live.Lock()
	defer s.live.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed != nil {
		return nil
	}
	s.closed = fmt.Errorf("snapshot: %w", why)
	s.h.snapMem.put(s.arena, &s.idx)
	s.idx, s.arena = keptIndex{}, nil
	if s.spill != nil {
		return s.spill.Close()
	}
	return nil
}

// closeSnapshots ends every open snapshot, before Close writes the pool
// and unmaps it.
func (h *Heap) closeSnapshots() {
	h.snapMu.Lock()
	list := h.snapList()
	h.snaps.Store(nil)
	h.snapMu.Unlock()
	for _, s := range list {
		s.drop(pmemgo.ErrClosed)
	}
}

// Backup writes a copy of the pool as of the last commit to path,
// atomically: the image goes to a temporary file in the same directory,
// which is synced and renamed into place, so that path holds a whole pool
// or nothing. Transactions go on meanwhile; while they commit, the copy
// of a pool file yields to them (see backupPause): under a writer at full
// speed, it copies a third of the time and takes some ten times as long
// as on an idle pool, unless SetBackupOptions says otherwise.
func (h *Heap) Backup(path string) error {
	s, err := h.Snapshot(nil)
	if err != nil {
		return err
	}
	defer s.Close()
	// Nothing else reads this snapshot: as the backup goes on, the lines
	// it has passed need not be kept.
	s.once = true
	return s.Backup(path)
}

// BackupOptions tunes Backup; the zero value is what Open sets up.
type BackupOptions struct {
	// FullSpeed copies at full speed even while transactions commit,
	// instead of yielding to them: the backup is done sooner and slows
	// the writers more.
	FullSpeed bool
}

// SetBackupOptions changes how this heap's backups run, from the next
// part they copy.
func (h *Heap) SetBackupOptions(o BackupOptions) { h.backupFullSpeed.Store(o.FullSpeed) }

// readPast records that a snapshot read once has been read up to end.
func (s *Snapshot) readPast(end int64) {
	if s.once {
		s.behind.Store(end)
	}
}

// Backup writes the snapshot's image to path as Heap.Backup does.
func (s *Snapshot) Backup(path string) error {
	err := writeAtomically(path, ".backup-*", func(tmp *os.File) error {
		if s.h.poolKey() != nil {
			return s.writeSealed(tmp)
		}
		if device.SharesFile(s.h.dev) {
			return s.copyFile(tmp)
		}
		_, err := s.WriteTo(tmp)
		return err
	})
	if err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	return nil
}

// writeSealed writes the image to dst as a sealed file under the heap's
// key, so that the backup of a sealed pool is sealed too.
func (s *Snapshot) writeSealed(dst *os.File) error {
	w, err := newSealedWriter(dst, s.h.poolKey(), s.h.UUID(), s.size)
	if err != nil {
		return err
	}
	if _, err = s.WriteTo(w); err != nil {
		return err
	}
	return w.finish(dst)
}

// Open opens the snapshot's image as a read-only heap, to read objects as
// they were at the snapshot. The image is copied into an anonymous file in
// memory, which the heap's Close frees.
func (s *Snapshot) Open(opts *Options) (*Heap, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	// The image is plaintext in this process's memory, as the heap's own
	// mapping is: it is opened without the key.
	o.ReadOnly, o.Size, o.Key = true, 0, nil
	fd, err := unix.MemfdCreate("pmemgo-snapshot", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pmemgo-snapshot")
	defer f.Close()
	if _, err := s.WriteTo(f); err != nil {
		return nil, fmt.Errorf("snapshot: open: %w", err)
	}
	return Open(fmt.Sprintf("/proc/self/fd/%d", fd), &o)
}

// copyFile writes the image to dst by copying the pool file in the kernel
// (copy_file_range), which for a shared mapping holds the mapping's bytes,
// chunk by chunk; each chunk's kept lines and patched words are written
// over it afterwards. A line a transaction changed while the kernel copied
// it was kept before it was changed, so the overlay that follows puts its
// old content back, as read does for a copy in memory.
func (s *Snapshot) copyFile(dst *os.File) error {
	src := s.h.f
	// The chunks' kept lines go to one buffer, reused: a backup under a
	// busy writer keeps some 100k lines, and fresh slices for them each
	// time made garbage the writer's own allocations paid to collect.
	var kept []keptLine
	for off := int64(0); off < s.size; off += copyChunkSize {
		t0, commits := time.Now(), s.h.stats.commits.Load()
		if err := s.copyChunk(src, dst, off, min(copyChunkSize, s.size-off), &kept); err != nil {
			return err
		}
		if s.h.stats.commits.Load() != commits && !s.h.backupFullSpeed.Load() {
			backupPause(backupYield * time.Since(t0))
		}
	}
	return nil
}

// backupPause is how a backup yields to writers: after a chunk during
// which transactions committed, it pauses backupYield times as long as the
// chunk took, so that under load the copy runs a third of the time and
// leaves the writers more of the machine. In BenchmarkSnapshotWriter (two
// cores, a writer at full speed, a 1 GiB pool), a backup at full speed
// cost the writer 14-25% of its rate; pausing as long as each chunk took,
// 6-13% (medians of five rounds); pausing twice as long, 2-8%, the backup
// then taking 5.5-8.5 s against 0.6 s idle. An idle pool is copied at full
// speed. Tests replace it.
var backupPause = time.Sleep

// backupYield is how many times as long as a chunk took a backup pauses
// after it, while transactions commit.
const backupYield = 2

// copyChunkSize is what copyFile copies per system call: large, since
// nothing is locked while the kernel copies.
const copyChunkSize = 32 << 20

// copyChunk copies n bytes of the image at off with copy_file_range, then
// writes the overlay over them, holding live so that the heap stays open.
func (s *Snapshot) copyChunk(src, dst *os.File, off, n int64, buf *[]keptLine) error {
	var kept []keptLine
	err := s.unlockedCopy(func() error {
		for done := int64(0); done < n; {
			in, out := off+done, off+done
			k, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(n-done), 0)
			if err != nil {
				return fmt.Errorf("snapshot: copy_file_range: %w", err)
			}
			if k == 0 {
				return fmt.Errorf("snapshot: copy_file_range copied nothing at offset %d", off+done)
			}
			done += int64(k)
		}
		return nil
	}, func() (err error) {
		kept, err = s.keptIn(off, off+n, (*buf)[:0])
		*buf = kept
		return err
	})
	if err != nil {
		return err
	}
	s.readPast(off + n)
	return s.writeOverlay(dst, kept, off, off+n)
}

// keptLine is a kept line's old content and its offset in the pool.
type keptLine struct {
	at   int64
	data [lineSize]byte
}

// keptIn returns the lines kept in [off, end) with their old content.
// s.mu is held. The kernel copy of that range was done before: a line
// changed during it was kept before it changed, so it is among these; one
// kept later was copied before it changed.
func (s *Snapshot) keptIn(off, end int64, out []keptLine) ([]keptLine, error) {
	for r := off / keptRegion; r*keptRegion < end; r++ {
		err := s.idx.each(r, func(l keptAt) error {
			at := int64(l.line) * lineSize
			if at < off || at >= end {
				return nil
			}
			out = append(out, keptLine{at: at})
			return s.copyLine(out[len(out)-1].data[:], at, int64(l.line), l.pos)
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// writeOverlay writes over [off, end) of dst, without any lock: the log's
// entries as zeros, the kept lines' old content, and the patched words.
func (s *Snapshot) writeOverlay(dst *os.File, kept []keptLine, off, end int64) error {
	if lo, hi := max(off, s.zeroLo), min(end, s.zeroHi); lo < hi {
		zeros := make([]byte, min(hi-lo, 1<<20))
		for at := lo; at < hi; at += int64(len(zeros)) {
			if _, err := dst.WriteAt(zeros[:min(int64(len(zeros)), hi-at)], at); err != nil {
				return err
			}
		}
	}
	for i := range kept {
		k := &kept[i]
		if _, err := dst.WriteAt(k.data[:min(lineSize, end-k.at)], k.at); err != nil {
			return err
		}
	}
	for at, v := range s.patch {
		if at >= off && at+8 <= end {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], v)
			if _, err := dst.WriteAt(w[:], at); err != nil {
				return err
			}
		}
	}
	return nil
}
