package ha

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/fsx"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// A primary keeps, beside its pool, a record of the chunks
// (wire.HashChunk bytes each) that changed since its replicas last
// acknowledged them, so that a guardian saving the pool after the
// application died ships those chunks only, instead of hashing the whole
// pool on both sides to find them. The record is a file mapped shared:
// what the primary stores in it is in the page cache the moment it is
// stored, so it survives the process (SIGKILL, a panic), though not the
// machine, whose boot it names.
//
// The chunks are those of what the mirror replicates: the pool file or,
// for a sealed pool, its sealed file, in which a change of the pool's
// lines is a change of their records.
//
// A chunk is marked pending (math.MaxUint64) before the heap changes any
// byte of it (heap.OnWrite), and again when a line of it is written back
// (Device().Subscribe), so that its new content cannot reach the pool
// file unmarked; when the mirror captures a batch (mirror.Options.
// OnCapture), the chunks pending become that batch's sequence number: a
// replica that holds that batch holds their content. A replica that holds
// batch R of the record's epoch lacks exactly the chunks marked above R.
//
// Layout (little-endian):
//
//	[0, 8)     magic "PMHADRTY"
//	[8, 12)    version
//	[12, 16)   chunk size
//	[16, 32)   pool UUID
//	[32, 40)   pool size
//	[40, 48)   epoch of the primary; zero until its mirror started
//	[48, 56)   newest batch every replica acknowledged
//	[56, 64)   generation the pool's undo log word holds, or will once
//	           the change marked last is made
//	[64, 80)   boot id of the machine
//	[80, 88)   xxhash64 of [0, 80)
//	[4096, +8 per chunk) each chunk's mark
const (
	dirtyMagic   = "PMHADRTY"
	dirtyVersion = 1
	dirtySumOff  = 80
	dirtyMarks   = 4096
	// pendingMark marks a chunk that changed after the last batch.
	pendingMark = math.MaxUint64
)

// dirtyHeader is the header of a dirty-chunk record.
type dirtyHeader struct {
	UUID               [16]byte
	Size               uint64
	Epoch, Acked, Gen  uint64
	Boot               [16]byte
	chunkSize, version uint32
}

var dle = binary.LittleEndian

func (h *dirtyHeader) encode(b []byte) {
	copy(b, dirtyMagic)
	dle.PutUint32(b[8:], dirtyVersion)
	dle.PutUint32(b[12:], wire.HashChunk)
	copy(b[16:], h.UUID[:])
	dle.PutUint64(b[32:], h.Size)
	dle.PutUint64(b[40:], h.Epoch)
	dle.PutUint64(b[48:], h.Acked)
	dle.PutUint64(b[56:], h.Gen)
	copy(b[64:], h.Boot[:])
	dle.PutUint64(b[dirtySumOff:], xxhash.Sum64(b[:dirtySumOff]))
}

func decodeDirtyHeader(b []byte) (dirtyHeader, error) {
	var h dirtyHeader
	switch {
	case len(b) < dirtyMarks:
		return h, fmt.Errorf("%d bytes, shorter than its header", len(b))
	case string(b[:8]) != dirtyMagic:
		return h, fmt.Errorf("magic %q", b[:8])
	case dle.Uint64(b[dirtySumOff:]) != xxhash.Sum64(b[:dirtySumOff]):
		return h, errors.New("header checksum fails")
	}
	h.version, h.chunkSize = dle.Uint32(b[8:]), dle.Uint32(b[12:])
	copy(h.UUID[:], b[16:])
	h.Size = dle.Uint64(b[32:])
	h.Epoch, h.Acked, h.Gen = dle.Uint64(b[40:]), dle.Uint64(b[48:]), dle.Uint64(b[56:])
	copy(h.Boot[:], b[64:])
	return h, nil
}

// dirtyPath is where the dirty-chunk record of the pool at path is kept.
func dirtyPath(pool string) string { return pool + ".dirty" }

// bootID returns this boot's id, or zeros where the kernel does not say.
func bootID() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err == nil {
		hex.Decode(id[:], []byte(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")))
	}
	return id
}

// dirtyRecord is the primary's side of the record.
type dirtyRecord struct {
	f     *os.File
	path  string
	mem   []byte
	marks []uint64
	// mapped holds mem for the cleanup that unmaps it once the record is
	// garbage: a growth replaces mem.
	mapped *recordMapping
	pool   []byte
	// sealed is set for a sealed pool, whose marks are of its sealed file.
	sealed bool
	// genOff is the pool offset of the undo log's generation word.
	genOff uint64
	m      atomic.Pointer[mirror.Mirror]

	// mu orders the marks and the header: write-backs come from the
	// flushing goroutine, the rest under the heap's writer lock.
	mu sync.Mutex
	// pending lists the chunks marked pending since the last capture.
	pending []uint32
	hdr     dirtyHeader
	// broken is set once a change fell outside the chunks recorded, or
	// the record could not follow a growth: it no longer says what
	// changed.
	broken bool
	cancel []func()
}

// newDirtyRecord makes a fresh record for h, every chunk unchanged, and
// starts marking. It is written beside the pool and renamed into place,
// so that a record of an earlier start still mapped is not truncated
// under it. The record becomes usable once start gives it the epoch.
func newDirtyRecord(h *heap.Heap) (*dirtyRecord, error) {
	pool := h.Device().Bytes()
	hb := pool[:layout.SlotOff(1)+layout.HeaderBytes]
	ph, err := layout.DecodeHeader(hb)
	if err != nil {
		if ph, err = layout.DecodeHeader(hb[layout.SlotOff(1):]); err != nil {
			return nil, fmt.Errorf("pool header: %w", err)
		}
	}
	_, sealed := device.SealedFile(h.Device())
	r := &dirtyRecord{pool: pool, genOff: ph.LogOff + layout.LogGenOff, sealed: sealed}
	size := len(replicated(h))
	r.hdr = dirtyHeader{UUID: h.UUID(), Size: uint64(size), Boot: bootID()}
	if r.hdr.Gen, err = r.poolGen(); err != nil {
		return nil, err
	}
	r.path = dirtyPath(h.Path())
	f, mem, err := newRecordFile(r.path+".tmp", size)
	if err != nil {
		return nil, err
	}
	r.f, r.mem = f, mem
	r.marks = recordMarks(mem)
	r.writeHeader()
	if err := os.Rename(f.Name(), r.path); err != nil {
		r.unmap()
		os.Remove(f.Name())
		return nil, err
	}
	r.mapped = &recordMapping{mem: mem}
	runtime.AddCleanup(r, func(m *recordMapping) { unix.Munmap(m.mem) }, r.mapped)
	r.cancel = []func(){h.OnWrite(r.onWrite), h.Device().Subscribe(r)}
	r.cancel = append(r.cancel, h.OnClose(r.close))
	return r, nil
}

// recordMapping is a record's mapping, as its cleanup unmaps it.
type recordMapping struct{ mem []byte }

// newRecordFile creates the file of a record for a replicated file of
// size bytes at path, every mark zero, its space allocated, and maps it.
func newRecordFile(path string, size int) (*os.File, []byte, error) {
	chunks := (size + wire.HashChunk - 1) / wire.HashChunk
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, err
	}
	recSize := dirtyMarks + 8*chunks
	if err := fsx.Allocate(f, int64(recSize)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, nil, err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, recSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return f, mem, nil
}

// recordMarks views the marks of a record's mapping.
func recordMarks(mem []byte) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(&mem[dirtyMarks])), (len(mem)-dirtyMarks)/8)
}

// Grown follows the pool's growth to size bytes (device.GrowthFollower),
// under the heap's writer lock, before anything is written in the new
// part: the record is made again at the new size beside the old one, its
// marks kept and the new part's chunks pending (no replica need hold
// them yet), and renamed over it. A guardian that reads the old record
// finds that its size is not the pool's, and saves the pool without it.
// If that fails, the record is broken (the guardian is told it cannot be
// used) and the growth goes on.
func (r *dirtyRecord) Grown(size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken {
		return
	}
	if r.sealed {
		size = int(seal.FileSize(int64(size)))
	}
	f, mem, err := newRecordFile(r.path+".tmp", size)
	if err == nil {
		marks := recordMarks(mem)
		copy(marks, r.marks)
		for c := len(r.marks); c < len(marks); c++ {
			marks[c] = pendingMark
			r.pending = append(r.pending, uint32(c))
		}
		hdr := r.hdr
		hdr.Size = uint64(size)
		hdr.encode(mem)
		if err = os.Rename(f.Name(), r.path); err != nil {
			unix.Munmap(mem)
			f.Close()
			os.Remove(f.Name())
		} else {
			unix.Munmap(r.mem)
			r.f.Close()
			r.f, r.mem, r.marks, r.hdr.Size = f, mem, marks, uint64(size)
			r.mapped.mem = mem
		}
	}
	if err != nil {
		r.broken = true
		r.writeHeader()
	}
}

// replicated returns what the mirror replicates of h: its pool's memory,
// or for a sealed pool the mapping of its sealed file.
func replicated(h *heap.Heap) []byte {
	if inner, sealed := device.SealedFile(h.Device()); sealed {
		return inner.Bytes()
	}
	return h.Device().Bytes()
}

// sealedRange returns the range of a sealed file that holds the records
// of the pool's range [off, off+n).
func sealedRange(off, n uint64) (uint64, uint64) {
	if n == 0 {
		return uint64(seal.RecordOff(int64(off))), 0
	}
	lo := uint64(seal.RecordOff(int64(off)))
	return lo, uint64(seal.RecordOff(int64(off+n-1))) + seal.RecordSize - lo
}

// fileRange returns the range of the replicated file that holds the
// pool's range [off, off+n).
func (r *dirtyRecord) fileRange(off, n uint64) (uint64, uint64) {
	if r.sealed {
		return sealedRange(off, n)
	}
	return off, n
}

// poolGen returns the generation the pool's undo log word holds.
func (r *dirtyRecord) poolGen() (uint64, error) {
	w := dle.Uint64(r.pool[r.genOff:])
	gen, ok := layout.OpenWord(w)
	if !ok {
		return 0, fmt.Errorf("undo log generation word %#x fails its check", w)
	}
	return gen, nil
}

// start makes the record usable: the primary's mirror runs, with epoch
// m.Epoch().
func (r *dirtyRecord) start(m *mirror.Mirror) {
	r.m.Store(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.broken {
		r.hdr.Epoch = m.Epoch()
		r.writeHeader()
	}
}

// writeHeader stores the header, or an invalid one once broken.
func (r *dirtyRecord) writeHeader() {
	if r.broken {
		clear(r.mem[:dirtySumOff+8])
		return
	}
	r.hdr.encode(r.mem)
}

// onWrite marks the chunks of a range the heap is about to change. When
// it is the undo log's generation word, the record notes the generation
// it is about to hold: a guardian finding another one knows the pool was
// written by someone that kept no record.
func (r *dirtyRecord) onWrite(off, n uint64) {
	foff, fn := r.fileRange(off, n)
	if r.pendingAll(foff, fn) && (r.genOff < off || r.genOff >= off+n) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.markLocked(foff, fn)
	if off <= r.genOff && r.genOff < off+n && !r.broken {
		if gen, err := r.poolGen(); err == nil {
			r.hdr.Gen = gen + 1
		} else {
			r.broken = true
		}
		r.writeHeader()
	}
}

// WriteBack marks the chunks of a range written back (pool offsets, on
// a sealed device too). It implements device.Subscriber.
func (r *dirtyRecord) WriteBack(off, n int) {
	foff, fn := r.fileRange(uint64(off), uint64(n))
	if r.pendingAll(foff, fn) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.markLocked(foff, fn)
}

// Fence implements device.Subscriber.
func (r *dirtyRecord) Fence() {}

// pendingAll reports whether every chunk of [off, off+n) is marked
// pending already, which is the common case: a commit changes the chunks
// the one before changed. A chunk stops being pending only at a capture,
// at a commit boundary under the heap's writer lock, which every change
// and write-back of the pool happens under too.
func (r *dirtyRecord) pendingAll(off, n uint64) bool {
	for c := off / wire.HashChunk; c*wire.HashChunk < off+n; c++ {
		if c >= uint64(len(r.marks)) || atomic.LoadUint64(&r.marks[c]) != pendingMark {
			return false
		}
	}
	return true
}

func (r *dirtyRecord) markLocked(off, n uint64) {
	if r.broken || n == 0 {
		return
	}
	for c := off / wire.HashChunk; c*wire.HashChunk < off+n; c++ {
		if c >= uint64(len(r.marks)) {
			r.broken = true
			r.writeHeader()
			return
		}
		if atomic.LoadUint64(&r.marks[c]) != pendingMark {
			atomic.StoreUint64(&r.marks[c], pendingMark)
			r.pending = append(r.pending, uint32(c))
		}
	}
}

// capture gives the chunks pending the sequence number of the batch the
// mirror captures their content in, and notes what every replica
// acknowledged.
func (r *dirtyRecord) capture(seq uint64) {
	m := r.m.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken {
		return
	}
	for _, c := range r.pending {
		atomic.StoreUint64(&r.marks[c], seq)
	}
	r.pending = r.pending[:0]
	if m != nil {
		r.hdr.Acked = m.Acked()
		r.writeHeader()
	}
}

// close stops marking, when the heap closes. The record stays: what
// Close writes is the pool's metadata, which a guardian ships whatever
// the record says. The mapping stays until the record is garbage, for a
// transaction that Close waits for may still mark.
func (r *dirtyRecord) close() {
	for _, c := range r.cancel {
		c()
	}
	r.f.Close()
}

// unmap releases a record that was never put in place.
func (r *dirtyRecord) unmap() {
	unix.Munmap(r.mem)
	r.f.Close()
}
