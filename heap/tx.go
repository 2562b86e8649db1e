package heap

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// Tx is a transaction, valid only inside the closure given to Update or
// View.
type Tx struct {
	h        *Heap
	writable bool
	closed   bool
	// state is the heap state as this transaction sees and changes it.
	state layout.State

	logged  *loggedSet // ranges logged: offset -> length
	flushes []span     // ranges to make durable at commit
	added   []span     // ranges given to Add: their objects are checked at commit
	allocs  []slotRef
	allocAt map[uint64]bool // slot offsets allocated by this transaction
	frees   []slotRef
	freed   map[uint64]bool
	slabs   []*slabRef // slabs whose bitmap this transaction changed
	fresh   []*slabRef // slabs this transaction initialised
	// newTypes are the types this transaction added to the type table.
	newTypes []*typeInfo
	// freesApplied is set once the commit cleared the freed slots' bits.
	freesApplied bool
}

type span struct{ off, n uint64 }

type slotRef struct {
	s    *slabRef
	slot uint32
}

// Update runs fn in a read-write transaction. When fn returns nil the
// transaction commits: every change is durable when Update returns. When fn
// returns an error or panics, every change is rolled back, allocations and
// frees included, and the error (or panic) is passed on. A commit that
// fails, for instance with ErrForeignPointer, is rolled back too. Update
// inside a transaction of the same heap, in the same goroutine, returns
// ErrNestedTx instead of waiting for itself.
func (h *Heap) Update(fn func(*Tx) error) error {
	return h.UpdateContext(context.Background(), fn)
}

// UpdateContext is Update, waiting for the heap (another goroutine's
// Update, or running Views) at most until ctx is done: then it returns
// ctx's error, wrapped, without running fn. ctx bounds the wait only: once
// fn runs, the transaction runs to its end (fn may watch ctx itself and
// return an error to roll back).
func (h *Heap) UpdateContext(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for the heap's lock: %w", err)
	}
	if err := h.lock.lock(ctx); err != nil {
		return err
	}
	defer h.lock.unlock()
	return h.update(fn)
}

// update runs fn in a write transaction, with the lock held. It is apart
// from UpdateContext so that each keeps few enough returns for the
// compiler to inline its defers.
func (h *Heap) update(fn func(*Tx) error) error {
	if h.closed {
		return pmemgo.ErrClosed
	}
	if h.broken != nil {
		return h.broken
	}
	if h.ro {
		return pmemgo.ErrReadOnly
	}
	if err := h.lease.check(); err != nil {
		return err
	}
	tx := h.begin()
	defer func() {
		if r := recover(); r != nil {
			h.fail(tx.rollback())
			panic(r)
		}
	}()
	if err := fn(tx); err != nil {
		return errors.Join(err, h.fail(tx.rollback()))
	}
	if err := tx.commit(); err != nil {
		return errors.Join(err, h.fail(tx.rollback()))
	}
	return h.runCommitHooks()
}

// fail marks the heap broken when a rollback could not complete: the
// mapping no longer matches what is durable, and only a reopen recovers
// it. Every later Update and View returns the error; the pool stays
// mapped until Close, which runs the close hooks first, so that nothing
// still reading it (a mirror) finds it unmapped.
func (h *Heap) fail(err error) error {
	if err != nil {
		h.broken = fmt.Errorf("rollback failed; close the heap and reopen the pool to recover it: %w", err)
		err = h.broken
	}
	return err
}

// View runs fn in a read-only transaction. Views run in parallel with each
// other, never with an Update. A View inside a transaction of the same
// heap, in the same goroutine, returns ErrNestedTx: a nested read lock
// would wait for itself as soon as an Update queued between the two.
func (h *Heap) View(fn func(*Tx) error) error {
	return h.ViewContext(context.Background(), fn)
}

// ViewContext is View, waiting for a running Update at most until ctx is
// done: then it returns ctx's error, wrapped, without running fn.
func (h *Heap) ViewContext(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for the heap's lock: %w", err)
	}
	slot, err := h.lock.rlock(ctx)
	if err != nil {
		return err
	}
	defer h.lock.runlock(slot)
	if h.closed {
		return pmemgo.ErrClosed
	}
	if h.broken != nil {
		return h.broken
	}
	tx := &Tx{h: h, state: h.state}
	defer func() { tx.closed = true }()
	return fn(tx)
}

// begin starts a write transaction. Its maps and slices are the previous
// transaction's, emptied, so that a small transaction allocates little; a
// closed Tx kept by a caller still refuses every use, so sharing them is
// safe.
func (h *Heap) begin() *Tx {
	tx := &Tx{h: h, writable: true, state: h.state}
	if b := h.spare; b != nil {
		h.spare = nil
		b.logged.reset()
		clear(b.allocAt)
		clear(b.freed)
		tx.logged, tx.allocAt, tx.freed = b.logged, b.allocAt, b.freed
		tx.flushes, tx.added, tx.allocs, tx.frees = b.flushes[:0], b.added[:0], b.allocs[:0], b.frees[:0]
		tx.slabs, tx.fresh = b.slabs[:0], b.fresh[:0]
	}
	return tx
}

// recycle keeps a finished transaction's buffers for the next one.
func (h *Heap) recycle(tx *Tx) {
	tx.closed = true
	h.spare = tx
}

// usable returns why tx cannot be used, if it cannot.
func (tx *Tx) usable(write bool) error {
	switch {
	case tx.closed:
		return pmemgo.ErrTxClosed
	case write && !tx.writable:
		return pmemgo.ErrReadOnly
	}
	return nil
}

// Writable reports whether tx is an Update transaction.
func (tx *Tx) Writable() bool { return tx.writable }

// AddRange logs the n bytes at p so that a rollback restores them. Call it
// before changing memory of an object that existed before the transaction;
// objects allocated by the transaction need no logging.
func (tx *Tx) AddRange(p unsafe.Pointer, n uintptr) error {
	return tx.AddRanges(Range{p, n})
}

// Range is n bytes of pool memory starting at Ptr, for AddRanges.
type Range struct {
	Ptr unsafe.Pointer
	Len uintptr
}

// AddRanges logs several ranges as AddRange does, with one fence for all
// of them instead of one each: a transaction that changes many existing
// objects pays one ordering point before it changes them. Nothing may be
// changed before AddRanges returns; on an error, ranges before the
// failing one may be logged, and the transaction should be abandoned.
func (tx *Tx) AddRanges(rs ...Range) error {
	if err := tx.usable(true); err != nil {
		return err
	}
	logged := false
	for _, r := range rs {
		l, err := tx.logAdded(r.Ptr, r.Len)
		if err != nil {
			return err
		}
		logged = logged || l
	}
	if !logged || tx.h.buffered {
		// On a device that buffers stores, what the caller stores now
		// stays in memory until the commit writes it back.
		return nil
	}
	// The caller changes the ranges as soon as this returns: their old
	// bytes, and any entry logged before them, must be durable first.
	tx.h.log.flush()
	return tx.h.fence()
}

// logAdded checks and logs one range of AddRanges, without the fence, and
// reports whether it logged anything.
func (tx *Tx) logAdded(p unsafe.Pointer, n uintptr) (bool, error) {
	off, ok := tx.h.offset(p)
	if !ok {
		return false, fmt.Errorf("add range %p+%d: %w", p, n, pmemgo.ErrNotInPool)
	}
	if n == 0 {
		return false, nil
	}
	// The range must lie in one allocated slot: logging metadata or free
	// memory would let a rollback overwrite what the allocator owns.
	a := tx.h.alloc
	s, slot, within, ok := a.lookup(off)
	set := false
	if ok {
		var err error
		if set, err = a.allocated(s, slot); err != nil {
			return false, err
		}
	}
	if !set || uint64(within)+uint64(n) > uint64(s.sh.SlotSize) {
		return false, fmt.Errorf("add range at offset %d, %d bytes: not inside an allocated object: %w", off, n, pmemgo.ErrNotInPool)
	}
	tx.added = append(tx.added, span{off, uint64(n)})
	tx.flushLater(off, uint64(n))
	if tx.allocAt[a.slotOff(s, slot)] {
		return false, nil
	}
	if l, ok := tx.logged.get(off); ok && uint64(l) >= uint64(n) {
		return false, nil
	}
	if err := tx.logRange(off, int(n)); err != nil {
		return false, err
	}
	return true, nil
}

// logRange appends the current bytes of [off, off+n) to the undo log and
// flushes the entry; the caller fences before changing the range.
func (tx *Tx) logRange(off uint64, n int) error {
	if err := tx.h.log.append(tx.h.mem, off, n); err != nil {
		return err
	}
	if tx.logged == nil {
		tx.logged = &loggedSet{}
	}
	tx.logged.put(off, uint32(n))
	return nil
}

func (tx *Tx) flushLater(off, n uint64) { tx.flushes = append(tx.flushes, span{off, n}) }

// touchSlab records that the transaction changes s's header or bitmap,
// logging both the first time. The entry is flushed with the next fence;
// the header itself is written only at commit, after a fence.
func (tx *Tx) touchSlab(s *slabRef) error {
	if s.inTx {
		return nil
	}
	if err := tx.logRange(tx.h.pool.Header.SlabOffset(s.idx), slabMetaSize(s)); err != nil {
		return err
	}
	s.inTx = true
	tx.slabs = append(tx.slabs, s)
	return nil
}

// slabMetaSize is the size of a slab's header and bitmap.
func slabMetaSize(s *slabRef) int { return layout.SlabHeaderSize + int(layout.BitmapBytes(s.sh.Slots)) }

// touchState logs the heap state line before the transaction first
// changes it.
func (tx *Tx) touchState() error {
	if _, ok := tx.logged.get(layout.StateOff); ok {
		return nil
	}
	return tx.logRange(layout.StateOff, layout.StateSize)
}

// allocSlot reserves and zeroes a slot of class k and returns its offset.
func (tx *Tx) allocSlot(k classKey, elems uint32) (uint64, error) {
	s, slot, err := tx.h.alloc.alloc(tx, k, elems)
	if err != nil {
		return 0, err
	}
	off := tx.h.alloc.slotOff(s, slot)
	tx.h.cow(off, uint64(k.slot))
	clear(tx.h.mem[off : off+uint64(k.slot)])
	tx.allocs = append(tx.allocs, slotRef{s, slot})
	if tx.allocAt == nil {
		tx.allocAt = map[uint64]bool{}
	}
	tx.allocAt[off] = true
	tx.flushLater(off, uint64(k.slot))
	return off, nil
}

// freeSlot frees the slot at the commit of tx.
func (tx *Tx) freeSlot(s *slabRef, slot uint32) error {
	off := tx.h.alloc.slotOff(s, slot)
	set, err := tx.h.alloc.allocated(s, slot)
	if err != nil {
		return err
	}
	if !set || tx.freed[off] {
		return fmt.Errorf("free of slab %d slot %d at offset %d: not allocated: %w", s.idx, slot, off, pmemgo.ErrInvalidFree)
	}
	if tx.freed == nil {
		tx.freed = map[uint64]bool{}
	}
	tx.freed[off] = true
	tx.frees = append(tx.frees, slotRef{s, slot})
	return tx.touchSlab(s)
}

// commit makes the transaction durable. The steps must happen in order:
//  1. check that every touched object points only at what the pool holds,
//     and that the primary's lease still holds;
//  2. log the metadata the commit changes, and choose which changed ranges
//     the commit record carries (small ones) and which are made durable
//     before it (ranges too large to copy);
//  3. fence, so that the metadata's undo entries and the ranges not
//     carried are durable (one fence, and none when there is nothing new:
//     entries usually reached the media with the fence of a later Add);
//  4. write the metadata;
//  5. flush everything, append the commit record carrying the new content
//     of every other range, and fence: from here on a crash keeps the
//     transaction, and recovery copies the record's content back in place
//     whatever the ranges hold, so that nothing stored after Update
//     returned can undo it. Retiring the log is left to the next
//     transaction's first fence, or Close.
func (tx *Tx) commit() error {
	defer tx.h.recycle(tx)
	if err := tx.checkForeign(); err != nil {
		return err
	}
	// The closure may have run past the end of the lease: the lease is
	// checked again before anything of the commit reaches the media.
	if err := tx.h.lease.check(); err != nil {
		return err
	}
	writes, err := tx.logMetadata()
	if err != nil {
		return err
	}
	l := &tx.h.log
	if !l.open && len(tx.flushes) == 0 {
		return nil
	}
	h := tx.h
	dev := h.dev
	buf := l.scratch()
	for _, w := range writes {
		buf = append(buf, layout.CommitRange{Off: w.off, Len: w.n, Redo: true})
	}
	nmeta := len(mergeRanges(buf))
	buf = buf[:nmeta]
	for _, f := range tx.flushes {
		buf = append(buf, layout.CommitRange{Off: f.off, Len: f.n})
	}
	ranges, early, err := l.plan(buf[:nmeta+len(mergeRanges(buf[nmeta:]))], nmeta)
	if err != nil {
		return err
	}
	if h.buffered {
		if err := tx.commitBuffered(ranges, writes, early); err != nil {
			return err
		}
		l.done()
		h.state = tx.state
		tx.settle()
		h.stats.commits.Add(1)
		return nil
	}
	for _, r := range ranges {
		if !r.Redo {
			dev.Flush(int(r.Off), int(r.Len))
		}
	}
	if l.flush() || early {
		if err := h.fence(); err != nil {
			return err
		}
	}
	for _, w := range writes {
		w.apply()
	}
	for _, r := range ranges {
		if r.Redo {
			dev.Flush(int(r.Off), int(r.Len))
		}
	}
	if err := l.commit(h.mem, ranges); err != nil {
		return err
	}
	if err := h.fence(); err != nil {
		return err
	}
	l.done()
	h.state = tx.state
	tx.settle()
	h.stats.commits.Add(1)
	return nil
}

// commitBuffered is steps 3-5 of commit on a device that buffers stores
// until they are flushed, where nothing the transaction stored has reached
// the file yet: the commit record, carrying the new content, is written
// and fenced first (the one fence of a small transaction), and the ranges
// are written back after it without a fence of their own. Until the next
// fence makes them durable, recovery copies the record's content back in
// place (layout.ScanPrev), so the record must outlive that fence: see
// undoLog.begin. Ranges too large for the record are written back before
// it, once the entries that undo them are durable: two more fences.
func (tx *Tx) commitBuffered(ranges []layout.CommitRange, writes []metaWrite, early bool) error {
	h, l := tx.h, &tx.h.log
	if early {
		l.flush()
		if err := h.fence(); err != nil {
			return err
		}
		for _, r := range ranges {
			if !r.Redo {
				h.dev.Flush(int(r.Off), int(r.Len))
			}
		}
		if err := h.fence(); err != nil {
			return err
		}
	}
	for _, w := range writes {
		w.apply()
	}
	if err := l.commit(h.mem, ranges); err != nil {
		return err
	}
	if err := h.fence(); err != nil {
		return err
	}
	for _, r := range ranges {
		if r.Redo {
			h.dev.Flush(int(r.Off), int(r.Len))
		}
	}
	l.unfenced = l.gen
	return nil
}

// mergeRanges sorts ranges and merges those that overlap or touch, so
// that the objects a transaction allocated side by side in a slab take one
// range of the commit record. Ranges that merely lie near each other are
// not merged: the bytes between them are not the transaction's, and a later
// transaction may change them before this one's log is retired.
func mergeRanges(rs []layout.CommitRange) []layout.CommitRange {
	slices.SortFunc(rs, func(a, b layout.CommitRange) int { return cmp.Compare(a.Off, b.Off) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].Off+out[n-1].Len {
			last := &out[n-1]
			last.Len = max(last.Off+last.Len, r.Off+r.Len) - last.Off
			continue
		}
		out = append(out, r)
	}
	return out
}

// metaWrite is a metadata change the commit makes after logging it.
type metaWrite struct {
	off, n uint64
	apply  func()
}

// logMetadata applies the transaction's frees to the volatile bitmaps,
// then logs every metadata range the commit will write and returns the
// writes to make.
func (tx *Tx) logMetadata() ([]metaWrite, error) {
	tx.freesApplied = true
	for _, f := range tx.frees {
		f.s.bits[f.slot/64] &^= 1 << (f.slot % 64)
		f.s.used--
		f.s.touch(int(f.slot / 64))
	}
	if len(tx.frees) > 0 {
		tx.h.alloc.lowerMark(tx)
	}
	var writes []metaWrite
	for _, s := range tx.slabs {
		writes = append(writes, tx.slabWrites(s)...)
	}
	if tx.state != tx.h.state {
		writes = append(writes, metaWrite{off: layout.StateOff, n: layout.StateSize, apply: func() {
			tx.state.Encode(tx.h.mem[layout.StateOff:])
		}})
	}
	for _, w := range writes {
		if l, ok := tx.logged.get(w.off); ok && uint64(l) >= w.n {
			continue
		}
		if err := tx.logRange(w.off, int(w.n)); err != nil {
			return nil, err
		}
	}
	return writes, nil
}

// slabWrites returns the metadata writes for one slab the transaction
// changed: a whole new header and bitmap for a fresh slab, zeroed header
// lines for a slab left empty, else the header line and changed bitmap
// words.
func (tx *Tx) slabWrites(s *slabRef) []metaWrite {
	h := tx.h
	so := h.pool.Header.SlabOffset(s.idx)
	mem := h.mem[so:]
	switch {
	case s.used == 0:
		// Zero the header lines even of a fresh slab: it may lie below the
		// new high-water mark with bytes of an aborted transaction in it.
		var ws []metaWrite
		for k := range uint64(s.sh.Extent) {
			line := so + k*h.pool.Header.SlabSize
			ws = append(ws, metaWrite{off: line, n: layout.SlabHeaderSize, apply: func() {
				clear(h.mem[line : line+layout.SlabHeaderSize])
			}})
		}
		return ws
	case s.fresh:
		n := uint64(layout.SlabHeaderSize + layout.BitmapBytes(s.sh.Slots))
		return []metaWrite{{off: so, n: n, apply: func() {
			s.sh.Used = s.used
			putBits(layout.Bitmap(mem, s.sh.Slots), s.bits, 0, len(s.bits)-1)
			layout.EncodeSlabHeader(mem, &s.sh)
		}}}
	}
	lo, hi := s.lo, s.hi
	return []metaWrite{{off: so, n: uint64(slabMetaSize(s)), apply: func() {
		if lo <= hi {
			putBits(layout.Bitmap(mem, s.sh.Slots), s.bits, lo, hi)
		}
		s.sh.Used = s.used
		layout.SetSlabUsed(mem, s.used)
		layout.SealSlab(mem, s.sh.Slots)
	}}}
}

func putBits(bm []byte, words []uint64, lo, hi int) {
	for w := lo; w <= hi; w++ {
		binary.LittleEndian.PutUint64(bm[w*8:], words[w])
	}
}

// settle updates the volatile allocator after a commit.
func (tx *Tx) settle() {
	a := tx.h.alloc
	for _, s := range tx.slabs {
		s.lo, s.hi, s.inTx = 1, 0, false
		if s.used == 0 {
			a.release(s)
			continue
		}
		s.fresh = false
		a.list(s)
	}
	for _, s := range tx.fresh {
		s.fresh = false
	}
}

// rollback undoes everything tx did, durable and volatile.
func (tx *Tx) rollback() error {
	defer tx.h.recycle(tx)
	h := tx.h
	h.stats.rollbacks++
	var err error
	if h.log.open && h.buffered {
		// Undoing writes lines back, whole: lines that hold this
		// transaction's stores besides what is undone must not reach
		// the file before the entries that undo them.
		h.log.flush()
		err = h.fence()
	}
	if h.log.open && err == nil {
		_, err = recovery.Rollback(h.dev, &h.pool.Header)
	}
	h.log.reset()
	a := h.alloc
	if tx.freesApplied {
		for _, f := range tx.frees {
			f.s.bits[f.slot/64] |= 1 << (f.slot % 64)
			f.s.used++
		}
	}
	for _, r := range tx.allocs {
		if !r.s.dead {
			r.s.bits[r.slot/64] &^= 1 << (r.slot % 64)
			r.s.used--
		}
	}
	for _, s := range tx.slabs {
		s.lo, s.hi, s.inTx = 1, 0, false
		a.list(s)
	}
	for _, s := range tx.fresh {
		a.release(s)
	}
	a.high = h.state.SlabHigh
	h.types.forget(tx.newTypes)
	return err
}

// undoLog writes the running transaction's entries to the pool's undo
// log. A transaction's first entry moves the log to the next generation,
// whose entries go to the other half of the log, so that the store
// retiring the previous transaction needs no fence of its own.
type undoLog struct {
	dev device.Device
	hdr *layout.Header
	// mark sets the pool's open mark before the first store of an open.
	mark func() error
	gen  uint64
	// open is set once the running transaction wrote to the log.
	open bool
	// tail is the next entry's offset in the log, end the end of the
	// half, flushed how far entries were flushed.
	tail, end, flushed int
	entries            int
	// committed holds the ranges of the last commit while its record is
	// live (until the next transaction's first entry or Close retires it),
	// with the content the record carries, to detect stray stores.
	committed []layout.CommitRange
	// stray is told of ranges a store outside a transaction changed after
	// the commit that wrote them.
	stray func(rs []layout.CommitRange, where string)
	// cow is told of every range of the pool before the log or the
	// transaction changes it, for the open snapshots.
	cow func(off, n uint64)
	// logged counts the bytes written to the log.
	logged uint64
	// fence is the heap's fence, counted in its statistics.
	fence func() error
	// unfenced is the generation of the last commit whose ranges were
	// written back after its record without a fence yet (a device that
	// buffers stores); zero when there is none. Its record must stay in
	// the log until a fence makes them durable.
	unfenced uint64
	// bufs are the commits' range buffers, used in turn (flip) so that
	// committed stays intact while the next commit builds its ranges.
	bufs [2][]layout.CommitRange
	flip bool
}

func (l *undoLog) region() []byte {
	return l.dev.Bytes()[l.hdr.LogOff : l.hdr.LogOff+l.hdr.LogSize]
}

// reset forgets the running transaction's entries after a commit or a
// rollback.
func (l *undoLog) reset() {
	// Open validated the generation word and only this log writes it.
	l.gen, _ = layout.LogGen(l.region())
	l.open = false
}

// begin starts the transaction's entries in the half of the next
// generation.
func (l *undoLog) begin() error {
	if l.open {
		return nil
	}
	// This is the first store of the transaction, and maybe of this open.
	l.cow(layout.OpenMarkOff, 8)
	if err := l.mark(); err != nil {
		return err
	}
	// Retiring the last commit's record is the cheap place to notice a
	// store into its ranges since: the content it carries is at hand.
	if l.committed != nil {
		var changed []layout.CommitRange
		for _, r := range l.committed {
			if r.Data != nil && !bytes.Equal(l.dev.Bytes()[r.Off:r.Off+r.Len], r.Data) {
				changed = append(changed, r)
			}
		}
		if len(changed) > 0 && l.stray != nil {
			l.stray(changed, "before the next transaction")
		}
		l.committed = nil
	}
	if l.unfenced != 0 && l.unfenced+2 == l.gen+1 {
		// The next generation's entries go where that record is: it
		// committed, and no commit fenced its write-back since (the
		// transaction after it was rolled back in memory).
		if err := l.fence(); err != nil {
			return err
		}
	}
	l.gen++
	l.cow(l.hdr.LogOff+layout.LogGenOff, 8)
	layout.SetLogGen(l.region(), l.gen)
	l.dev.Flush(int(l.hdr.LogOff)+layout.LogGenOff, 8)
	l.tail, l.end = layout.LogHalf(l.hdr.LogSize, l.gen)
	l.flushed, l.entries, l.open = l.tail, 0, true
	return nil
}

// append logs the current bytes of mem[off:off+n].
func (l *undoLog) append(mem []byte, off uint64, n int) error {
	if err := l.begin(); err != nil {
		return err
	}
	size := layout.LogEntrySize(n)
	if l.tail+size > l.end {
		return l.full(fmt.Sprintf("logging %d bytes at offset %d", n, off))
	}
	// The range changes once this returns; the entry's own lines now.
	l.cow(off, uint64(n))
	l.cow(l.hdr.LogOff+uint64(l.tail), uint64(size))
	layout.PutLogEntry(l.region()[l.tail:], l.gen, off, mem[off:off+uint64(n)])
	l.tail += size
	l.logged += uint64(size)
	l.entries++
	return nil
}

func (l *undoLog) full(what string) error {
	start, _ := layout.LogHalf(l.hdr.LogSize, l.gen)
	return fmt.Errorf("%s: the transaction has used %d of the %d bytes one transaction may log (half of the pool's %d-byte undo log, set by Options.LogSize at creation): %w",
		what, l.tail-start, l.end-start, l.hdr.LogSize, pmemgo.ErrTxTooLarge)
}

// flush flushes the entries not flushed yet and reports whether there
// were any, which then need a fence.
func (l *undoLog) flush() bool {
	if !l.open || l.flushed == l.tail {
		return false
	}
	l.dev.Flush(int(l.hdr.LogOff)+l.flushed, l.tail-l.flushed)
	l.flushed = l.tail
	return true
}

// redoBudget bounds the object content a commit record carries. Changes
// beyond it are flushed and fenced before the record instead: a fence
// costs less than copying them.
const redoBudget = 64 << 10

// plan marks which ranges the commit record carries: the first nmeta,
// metadata, always (metadata is written only after the fence that makes
// its undo entries durable), and the rest while they fit the budget and
// the log. early reports a range that must be durable before the record
// is written.
func (l *undoLog) plan(ranges []layout.CommitRange, nmeta int) (_ []layout.CommitRange, early bool, err error) {
	if err := l.begin(); err != nil {
		return nil, false, err
	}
	need := layout.RedoRecordSize(ranges)
	if l.tail+need > l.end {
		return nil, false, l.full(fmt.Sprintf("committing %d ranges", len(ranges)))
	}
	budget := min(redoBudget, l.end-l.tail-need)
	for i := nmeta; i < len(ranges); i++ {
		r := &ranges[i]
		if n := int(r.Len+7) &^ 7; n <= budget {
			r.Redo = true
			budget -= n
		} else {
			early = true
		}
	}
	return ranges, early, nil
}

// scratch returns an empty buffer for the next commit's ranges: not the
// one the last commit's ranges are kept in, which the next transaction's
// first entry reads.
func (l *undoLog) scratch() []layout.CommitRange {
	l.flip = !l.flip
	if l.flip {
		return l.bufs[0][:0]
	}
	return l.bufs[1][:0]
}

// commit appends and flushes the commit record for ranges, whose content
// is final, and keeps the ranges to check for stray stores.
func (l *undoLog) commit(mem []byte, ranges []layout.CommitRange) error {
	if err := l.begin(); err != nil {
		return err
	}
	size := layout.RedoRecordSize(ranges)
	if l.tail+size > l.end {
		return l.full(fmt.Sprintf("committing %d ranges", len(ranges)))
	}
	l.cow(l.hdr.LogOff+uint64(l.tail), uint64(size))
	layout.PutRedoRecord(l.region()[l.tail:], l.gen, l.entries, ranges, mem)
	l.tail += size
	l.logged += uint64(size)
	l.flush()
	l.committed = ranges
	if l.flip {
		l.bufs[0] = ranges
	} else {
		l.bufs[1] = ranges
	}
	return nil
}

// done closes the committed transaction's entries.
func (l *undoLog) done() { l.open = false }
