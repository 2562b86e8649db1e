// Package heap is the public API of pmemgo: a persistent heap of typed Go
// objects, with native Go pointers, kept in a memory-mapped pool file.
//
// Open maps a pool (creating it when missing), recovers it if a crash
// interrupted a transaction, and rewrites its pointers if it lands at a new
// address. Update runs a read-write transaction: every change made through
// it is atomic and durable when Update returns nil, and rolled back when
// the closure returns an error or panics. View runs a read-only one.
//
//	h, err := heap.Open("app.pool", &heap.Options{Size: 64 << 20})
//	...
//	err = h.Update(func(tx *heap.Tx) error {
//		root, err := heap.Root[Root](tx)
//		...
//		n, err := heap.New[Node](tx)   // new objects need no logging
//		...
//		if err := heap.Add(tx, &root.Head); err != nil { // log before changing
//			return err
//		}
//		root.Head = n
//		return nil
//	})
//
// Objects are read and written directly, through the pointers the API
// returns. Before changing an object that existed before the transaction,
// log the range with Add (or use Set); objects allocated in the same
// transaction need no logging. Pointers into the pool are valid only while
// the pool is open.
//
// Update transactions run one at a time and exclude View transactions,
// which run in parallel with each other: objects are changed in place, so a
// reader never runs while a writer may be changing what it reads.
package heap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// Options configures Open. The zero value opens an existing pool.
type Options struct {
	// Size is the initial size in bytes of a pool created because the
	// file does not exist, at least 1 MiB. Zero means the file must exist.
	// Opening an existing pool ignores Size, SlabSize and LogSize, and
	// Stats().Size tells the pool's size.
	Size int64
	// MaxSize is the size the pool may grow to. When an allocation finds
	// no room, the pool grows in place, doubling up to MaxSize (see
	// Heap.Grow); beyond it allocations fail with pmemgo.ErrNoSpace. The
	// pool records it: zero at creation means the size of the file system
	// the pool is on, at most DefaultMaxSize, and zero at a later open
	// keeps the recorded limit, which a non-zero MaxSize replaces. A
	// read-write open reserves MaxSize bytes of address space, no memory,
	// so that the pool grows without moving.
	MaxSize int64
	// SlabSize and LogSize override the slab size (a power of two from
	// 16 KiB to 16 MiB, default 64 KiB) and the undo log size (default
	// Size/16, between 128 KiB and 64 MiB; rounded up to 4 KiB) of a new
	// pool. A negative size, or one no new pool can have, is an error
	// wrapping ErrInvalidOptions that names the option, its value and the
	// limit.
	SlabSize, LogSize int64
	// Timeout is how long Open waits for the pool's file lock, held by
	// another process (or another Open of the same file). Zero waits
	// forever.
	Timeout time.Duration
	// ReadOnly opens the pool for reading only, sharing the lock with other
	// readers. Recovery, if the pool needs any, happens in memory and never
	// reaches the file.
	ReadOnly bool
	// Device chooses the device. Nil means device.Auto for a read-write
	// pool (device.Dax on a DAX file system, where a commit needs no system
	// call, else device.Msync) and device.Private for a read-only one.
	Device device.Mapper
	// ForceRelocate maps the pool away from its previous base, so that the
	// open swizzles. Tests use it to exercise swizzling every time.
	ForceRelocate bool
	// Workers is the number of goroutines swizzling; 0 means GOMAXPROCS.
	Workers int
	// FullValidation validates every slab header at open. Without it, a
	// pool closed cleanly and reopened at the same base is opened from the
	// slab summary its Close wrote, in time that does not grow with the
	// number of objects, and each slab's header is validated against the
	// summary when a transaction first allocates in it, frees from it,
	// logs an object in it or stores a pointer into it. Either way every
	// header is validated before anything in its slab is written.
	FullValidation bool
	// VerifyPointers checks every stored pointer at open, whatever the
	// path the open takes, and implies FullValidation. Each open path
	// guarantees:
	//   - relocated (the pool lands at a new base, ForceRelocate
	//     included): every pointer is checked in the read-only pass that
	//     precedes the rewrite, so a bad one leaves the pointers as they
	//     were;
	//   - after a crash (the pool was not closed), at the same base:
	//     every pointer is checked, after the undo log is rolled back;
	//   - a clean reopen at the same base: no pointer is read, so the open
	//     costs the same whatever the number of objects; the pool's
	//     pointers are as the last Close left them, unless the file was
	//     changed outside pmemgo. VerifyPointers checks them anyway.
	// A pointer is valid when it is nil or points to the start of an
	// allocated object of its field's type (or an element of an array of
	// that type), slice data points to an element boundary of an array of
	// its element type, string data into a byte array, and the range of a
	// slice (length at most capacity) or string lies inside its array. An
	// open that finds an invalid pointer fails with an error wrapping
	// pmemgo.ErrCorrupt that names the slab, object, type and field, and
	// writes nothing but the rollback of a crashed transaction.
	VerifyPointers bool
	// Logger, if set, is told what recovery did.
	Logger *slog.Logger
	// Key, if set, is the pool key (32 bytes): the pool file is sealed,
	// every 64-byte line encrypted and authenticated, and the process
	// works on the plaintext in private memory (see device.Sealed). A new
	// pool is created sealed; an existing one must have been created with
	// this key. Device, when set, then maps the sealed file. Nil means a
	// plain pool file.
	Key []byte
	// OldKey is the key a sealed pool's key is being rotated from
	// (RotateKey), needed only to open a pool whose rotation did not
	// finish.
	OldKey []byte
}

// Heap is an open pool.
type Heap struct {
	path string
	f    *os.File
	pool *recovery.Pool
	dev  device.Device
	mem  []byte
	base uintptr
	ro   bool
	// buffered is set when the device buffers stores until they are
	// flushed (device.BuffersStores): see undoLog.unfenced.
	buffered bool

	// lock is held for writing by Update and Close, for reading by View.
	lock   txLock
	closed bool
	// broken is set when a rollback failed: the heap refuses every use
	// until Close.
	broken error
	types  *registry
	alloc  *allocator
	log    undoLog
	// state is the committed heap state; transactions work on a copy.
	state layout.State
	hooks commitHooks
	// spare holds the buffers of the last write transaction, for reuse.
	spare  *Tx
	stats  txCounters
	logger *slog.Logger
	// snaps lists the open snapshots, which copy each line before a
	// transaction first changes it; snapMu orders changes to the list.
	snaps  atomic.Pointer[[]*Snapshot]
	snapMu sync.Mutex
	// snapMem is the memory closed snapshots leave to the next ones.
	snapMem snapMemory
	// writeHooks are told of each range before it changes (OnWrite).
	writeHooks writeHooks
	// inHooks is set while the commit hooks run, under the writer lock.
	inHooks bool
	// batchQueue holds the Batch callers waiting for the next batch, run
	// by the caller that is leader while batchLeader is set.
	batchMu     sync.Mutex
	batchQueue  []batchCall
	batchLeader bool
	batchOpts   BatchOptions
	// batchFull is closed by the caller that fills the queue to MaxSize
	// while the leader waits out MaxDelay; nil when none waits.
	batchFull chan struct{}
	// backupFullSpeed makes backups copy without yielding to writers
	// (SetBackupOptions).
	backupFullSpeed atomic.Bool
	// lease fences Update once the primary's lease ends (SetLeaseDeadline).
	lease lease
	// key is the pool key of a sealed pool, nil for a plain one. A key
	// rotation replaces it while backups may read it.
	key atomic.Pointer[[]byte]
}

// Open opens the pool at path, creating it with opts.Size bytes if it does
// not exist, and recovers it: a live undo log is rolled back, and if the
// pool is mapped at a new base its pointers are rewritten. Open never
// writes to a pool it could not validate.
func Open(path string, opts *Options) (*Heap, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := opts.check(); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && opts.Size > 0 && !opts.ReadOnly {
		if err := create(path, opts); err != nil {
			return nil, err
		}
	}
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	if err := recovery.Lock(f, !opts.ReadOnly, opts.Timeout); err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	h, err := openLocked(path, f, opts)
	if err != nil {
		f.Close() // releases the lock
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return h, nil
}

func openLocked(path string, f *os.File, opts *Options) (*Heap, error) {
	mapper := opts.mapper()
	pool, err := recovery.Open(f, recovery.Options{
		Mapper: mapper, ReadOnly: opts.ReadOnly, ForceRelocate: opts.ForceRelocate, Workers: opts.Workers,
		FullValidation: opts.FullValidation, VerifyPointers: opts.VerifyPointers,
		MaxSize: uint64(opts.MaxSize), DefaultMaxSize: defaultMaxSize(path, 0),
	})
	if err != nil {
		return nil, err
	}
	mem := pool.Dev.Bytes()
	h := &Heap{
		path: path, f: f, pool: pool, dev: pool.Dev, mem: mem,
		base: uintptr(unsafe.Pointer(unsafe.SliceData(mem))), ro: opts.ReadOnly,
		state: pool.State,
	}
	if opts.Key != nil {
		key := bytes.Clone(opts.Key)
		h.key.Store(&key)
	}
	h.types = newRegistry(pool.Types)
	h.alloc = newAllocator(h, pool.Slabs)
	h.logger = loggerOf(opts)
	h.buffered = device.BuffersStores(pool.Dev)
	h.log = undoLog{dev: pool.Dev, hdr: &pool.Header, mark: pool.MarkOpen, stray: h.reportStray, cow: h.cow, fence: h.fence}
	h.log.reset()
	if r := pool.Report; opts.Logger != nil && (r.RolledBack > 0 || r.Relocated) {
		opts.Logger.Info("pmemgo: pool recovered", "path", path, "rolled_back", r.RolledBack,
			"relocated", r.Relocated, "resumed", r.Resumed, "slabs_swizzled", r.Swizzle.Slabs,
			"pointers", r.Swizzle.Pointers, "swizzle", r.Swizzle.Duration)
	}
	if r := pool.Report; opts.Logger != nil && errors.Is(r.SummaryIgnored, pmemgo.ErrCorrupt) {
		opts.Logger.Warn("pmemgo: slab summary damaged; every slab header was validated instead, and Close writes a new summary",
			"path", path, "err", r.SummaryIgnored)
	}
	return h, nil
}

// create makes a new pool in a temporary file next to path and renames it
// into place once it is complete, so that path never names half a pool.
func create(path string, opts *Options) error {
	g, err := opts.geometry(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	err = writeAtomically(path, ".creating-*", func(tmp *os.File) error {
		_, err := recovery.Create(tmp, g, opts.createMapper())
		return err
	})
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// writeAtomically writes a new file at path through write, into a
// temporary file in the same directory (named with pattern after path's
// base name) that is synced and renamed into place, then syncs the
// directory: path holds the whole file or nothing, whatever crash comes.
func writeAtomically(path, pattern string, write func(*os.File) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+pattern)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close waits for running transactions, marks the pool cleanly closed and
// unmaps it, after running the OnClose hooks. Pointers into the pool must
// not be used afterwards. When the
// pool was written to, Close also writes a summary of its slabs, with
// which the next open at the same base reads one contiguous region
// instead of a header on every slab's page.
func (h *Heap) Close() error {
	if h.lock.heldByCaller() {
		return fmt.Errorf("close inside a transaction: %w", pmemgo.ErrNestedTx)
	}
	h.runCloseHooks()
	_ = h.lock.lock(context.Background())
	defer h.lock.unlock()
	if h.closed {
		return pmemgo.ErrClosed
	}
	h.closed = true
	h.closeSnapshots()
	h.snapMem.drop()
	if h.broken != nil {
		// The allocator's state is not the pool's: no summary, and Close
		// retries the rollback.
		return errors.Join(h.pool.Close(), h.f.Close())
	}
	err := h.retireCommitted()
	if !h.ro && !h.pool.Report.FromSummary {
		// Opened without a usable summary: the pool gets one, so that the
		// next open at this base is quick.
		err = errors.Join(err, h.pool.MarkOpen())
	}
	err = errors.Join(err, h.pool.CloseSummary(h.alloc.summary(h.state.SlabHigh)))
	return errors.Join(err, h.f.Close())
}

// Path returns the pool file's path.
func (h *Heap) Path() string { return h.path }

// Device returns the device the pool is mapped by, for instance to take
// crash images from an emulated device or to subscribe to write-backs.
func (h *Heap) Device() device.Device { return h.dev }

// Recovery returns what Open did to recover the pool.
func (h *Heap) Recovery() recovery.Report { return h.pool.Report }

// Base returns the address the pool is mapped at.
func (h *Heap) Base() uintptr { return h.base }

// offset returns the pool offset of address p, or false if p is not in
// the pool.
func (h *Heap) offset(p unsafe.Pointer) (uint64, bool) {
	off := uintptr(p) - h.base
	return uint64(off), off < uintptr(len(h.mem))
}

// at returns the address of pool offset off.
func (h *Heap) at(off uint64) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(unsafe.SliceData(h.mem)), off)
}

// Epoch returns the pool's epoch: the incarnation of the primary that
// writes it, for replication.
func (h *Heap) Epoch() uint64 {
	defer h.readLock()()
	return h.pool.Header.Epoch
}

// readLock takes the lock for reading, unless the caller is inside a
// transaction of this heap and so already excludes every writer, and
// returns the function that releases it.
func (h *Heap) readLock() func() {
	if h.lock.heldByCaller() {
		return func() {}
	}
	slot, _ := h.lock.rlock(context.Background())
	return func() { h.lock.runlock(slot) }
}

// NewEpoch makes this open of the pool a new incarnation: it increments
// the epoch stored in the pool header, durably, and returns it.
func (h *Heap) NewEpoch() (uint64, error) {
	return h.writeEpoch(func(cur uint64) (uint64, error) { return cur + 1, nil })
}

// UUID returns the pool's identity, fixed when it was created.
func (h *Heap) UUID() [16]byte { return h.pool.Header.UUID }
