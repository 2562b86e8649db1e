package heap

import (
	"encoding/binary"
	"errors"
	"fmt"
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

	logged  map[uint64]uint32 // ranges logged: offset -> length
	flushes []span            // ranges to make durable at commit
	added   []span            // ranges given to Add: their objects are checked at commit
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
// fails, for instance with ErrForeignPointer, is rolled back too.
func (h *Heap) Update(fn func(*Tx) error) (err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return pmemgo.ErrClosed
	}
	if h.ro {
		return pmemgo.ErrReadOnly
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

// fail closes the heap when a rollback could not complete: the mapping no
// longer matches what is durable, and only a reopen recovers it.
func (h *Heap) fail(err error) error {
	if err != nil {
		h.closed = true
		err = errors.Join(fmt.Errorf("rollback failed, pool closed (reopen to recover): %w", err), h.pool.Close(), h.f.Close())
	}
	return err
}

// View runs fn in a read-only transaction. Views run in parallel with each
// other, never with an Update.
func (h *Heap) View(fn func(*Tx) error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return pmemgo.ErrClosed
	}
	tx := &Tx{h: h, state: h.state}
	defer func() { tx.closed = true }()
	return fn(tx)
}

func (h *Heap) begin() *Tx {
	return &Tx{h: h, writable: true, state: h.state}
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
	if err := tx.usable(true); err != nil {
		return err
	}
	off, ok := tx.h.offset(p)
	if !ok {
		return fmt.Errorf("add range %p+%d: %w", p, n, pmemgo.ErrNotInPool)
	}
	if n == 0 {
		return nil
	}
	// The range must lie in one allocated slot: logging metadata or free
	// memory would let a rollback overwrite what the allocator owns.
	a := tx.h.alloc
	s, slot, within, ok := a.lookup(off)
	if !ok || !s.isSet(slot) || uint64(within)+uint64(n) > uint64(s.sh.SlotSize) {
		return fmt.Errorf("add range at offset %d, %d bytes: not inside an allocated object: %w", off, n, pmemgo.ErrNotInPool)
	}
	tx.added = append(tx.added, span{off, uint64(n)})
	tx.flushLater(off, uint64(n))
	if tx.allocAt[a.slotOff(s, slot)] {
		return nil
	}
	if l, ok := tx.logged[off]; ok && uint64(l) >= uint64(n) {
		return nil
	}
	if err := tx.logRange(off, int(n)); err != nil {
		return err
	}
	return tx.h.dev.Fence()
}

// logRange appends the current bytes of [off, off+n) to the undo log and
// flushes the entry; the caller fences before changing the range.
func (tx *Tx) logRange(off uint64, n int) error {
	if err := tx.h.log.append(tx.h.mem, off, n); err != nil {
		return err
	}
	if tx.logged == nil {
		tx.logged = map[uint64]uint32{}
	}
	tx.logged[off] = uint32(n)
	return nil
}

func (tx *Tx) flushLater(off, n uint64) { tx.flushes = append(tx.flushes, span{off, n}) }

func (tx *Tx) touchSlab(s *slabRef) {
	if !s.inTx {
		s.inTx = true
		tx.slabs = append(tx.slabs, s)
	}
}

// allocSlot reserves and zeroes a slot of class k and returns its offset.
func (tx *Tx) allocSlot(k classKey, elems uint32) (uint64, error) {
	s, slot, err := tx.h.alloc.alloc(tx, k, elems)
	if err != nil {
		return 0, err
	}
	off := tx.h.alloc.slotOff(s, slot)
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
	if !s.isSet(slot) || tx.freed[off] {
		return fmt.Errorf("free of slab %d slot %d at offset %d: not allocated: %w", s.idx, slot, off, pmemgo.ErrInvalidFree)
	}
	if tx.freed == nil {
		tx.freed = map[uint64]bool{}
	}
	tx.freed[off] = true
	tx.frees = append(tx.frees, slotRef{s, slot})
	tx.touchSlab(s)
	return nil
}

// commit makes the transaction durable. The steps must happen in order:
//  1. check that no touched object points outside the pool;
//  2. log the metadata the commit changes (bitmaps, slab headers, heap
//     state) and fence, so that a crash from here on rolls back;
//  3. write that metadata;
//  4. flush everything the transaction changed and fence;
//  5. retire the undo log: from here on the transaction is committed.
func (tx *Tx) commit() error {
	defer func() { tx.closed = true }()
	if err := tx.checkForeign(); err != nil {
		return err
	}
	writes, err := tx.logMetadata()
	if err != nil {
		return err
	}
	if len(tx.logged) == 0 && len(tx.flushes) == 0 {
		return nil
	}
	dev := tx.h.dev
	if len(writes) > 0 {
		if err := dev.Fence(); err != nil {
			return err
		}
	}
	for _, w := range writes {
		w.apply()
		dev.Flush(int(w.off), int(w.n))
	}
	for _, f := range tx.flushes {
		dev.Flush(int(f.off), int(f.n))
	}
	if err := dev.Fence(); err != nil {
		return err
	}
	if len(tx.logged) > 0 {
		if err := recovery.RetireLog(dev, &tx.h.pool.Header); err != nil {
			return err
		}
	}
	tx.h.log.reset()
	tx.h.state = tx.state
	tx.settle()
	return nil
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
	return []metaWrite{
		{off: so + uint64(layout.BitmapWordOff(uint32(lo*64))), n: uint64(hi-lo+1) * 8, apply: func() {
			putBits(layout.Bitmap(mem, s.sh.Slots), s.bits, lo, hi)
		}},
		{off: so, n: layout.SlabHeaderSize, apply: func() {
			s.sh.Used = s.used
			layout.SetSlabUsed(mem, s.used)
			layout.SealSlab(mem, s.sh.Slots)
		}},
	}
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
	defer func() { tx.closed = true }()
	h := tx.h
	_, err := recovery.Rollback(h.dev, &h.pool.Header)
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

// undoLog appends entries to the pool's undo log for the running
// transaction.
type undoLog struct {
	dev  device.Device
	hdr  *layout.Header
	tail int
	gen  uint64
}

func (l *undoLog) region() []byte {
	return l.dev.Bytes()[l.hdr.LogOff : l.hdr.LogOff+l.hdr.LogSize]
}

// reset starts an empty log after a commit or a rollback retired it.
func (l *undoLog) reset() {
	l.tail = layout.LogEntriesOff
	// Open validated the generation word and only this log writes it.
	l.gen, _ = layout.LogGen(l.region())
}

// append logs the current bytes of mem[off:off+n] and flushes the entry.
func (l *undoLog) append(mem []byte, off uint64, n int) error {
	size := layout.LogEntrySize(n)
	if uint64(l.tail+size) > l.hdr.LogSize {
		return fmt.Errorf("logging %d bytes at offset %d: %d of %d log bytes used: %w", n, off, l.tail, l.hdr.LogSize, pmemgo.ErrTxTooLarge)
	}
	layout.PutLogEntry(l.region()[l.tail:], l.gen, off, mem[off:off+uint64(n)])
	l.dev.Flush(int(l.hdr.LogOff)+l.tail, size)
	l.tail += size
	return nil
}
