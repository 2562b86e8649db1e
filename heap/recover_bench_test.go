//go:build linux

package heap_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
	"github.com/pmemgo/pmemgo/recovery"
)

const (
	// crashedTxUpdates is the size of the crashed transaction of DESIGN.md's
	// recovery target: one logged 8-byte update in each of 10k objects.
	crashedTxUpdates = 10_000
	// crashedTxPoolSize leaves room in the default undo log (a sixteenth of
	// the pool, split in two halves) for 10k entries of 40 bytes: each
	// half is 1 MiB, the entries take 400 KB.
	crashedTxPoolSize = 32 << 20
)

// crashRoot is the root of the crashed-transaction pool: the last object
// fillPool allocated, from which the chain of swzObj1.P runs through all
// of them.
type crashRoot struct {
	Last *swzObj1
}

// errCrash ends the Update that stands for the crashed transaction, once
// its crash image was taken.
var errCrash = errors.New("crash image taken")

// BenchmarkRecoverCrashedTx measures the recovery of a transaction of 10k
// updates that crashed before its commit. Target: under 20 ms (PMDK: 65
// ms).
//
// The crash image is built once. A pool of 10k 64-byte objects, each
// pointing at the one allocated before it, is reopened on the emulated
// device, and an Update logs (heap.Set) and changes the pointer of every
// object, to point at the object itself. Inside the closure, after the
// last change, the device gives the image a crash would leave if every
// dirty line had reached the media: the 10k undo entries, durable since
// each Set fenced its own, and every in-place change, so that recovery
// really has to restore each object.
//
// Each op is one Open, with the default msync device, of a fresh copy of
// that image written with the timer stopped: the rollback makes its
// restores durable as a real recovery does. (A read-only Open would roll
// back in a private mapping, with no msync and a copy-on-write fault per
// page written, which is not what a crashed application pays.) base=same
// opens at the base of the crash; base=relocated forces a new base, so
// that the Open also validates and swizzles the pool, as it must when the
// restarted process cannot get the old base. After every op, untimed, the
// chain is walked to check that each object holds its old pointer,
// swizzled when relocated.
func BenchmarkRecoverCrashedTx(b *testing.B) {
	dir := benchutil.PoolDir(b)
	c := crashImage(b, dir)
	for _, bc := range []struct {
		name     string
		relocate bool
	}{{"base=same", false}, {"base=relocated", true}} {
		b.Run(bc.name, func(b *testing.B) {
			benchRecoverOpen(b, filepath.Join(dir, "recover.pool"), c, bc.relocate)
		})
	}
}

// crashedPool is the crash image of BenchmarkRecoverCrashedTx.
type crashedPool struct {
	img []byte
	// offs are the pool offsets of the objects, in allocation order.
	offs []uint64
	// hold keeps the addresses the pool was mapped at during the crash,
	// so that base=same can map it there again.
	hold *addrHold
}

// crashImage builds the crash image described at BenchmarkRecoverCrashedTx
// in dir.
func crashImage(b *testing.B, dir string) *crashedPool {
	path := filepath.Join(dir, "crashed.pool")
	// fillPool's pool is closed when it returns: the objects are found
	// again by their offsets, taken from the addresses they had then.
	addrs := make([]uintptr, 0, crashedTxUpdates)
	fillPool(b, path, crashedTxPoolSize, crashedTxUpdates, func(o *swzObj1, prev *[4]*swzObj1) {
		linkObj1(o, prev)
		addrs = append(addrs, uintptr(unsafe.Pointer(o)))
	})
	emu := &device.Emulator{}
	h, err := heap.Open(path, &heap.Options{Device: emu})
	check(b, err)
	closed := false
	defer func() {
		if !closed {
			h.Close()
		}
	}()
	offs := make([]uint64, len(addrs))
	for i, a := range addrs {
		offs[i] = uint64(a) - h.Recovery().OldBase
	}
	check(b, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[crashRoot](tx)
		if err != nil {
			return err
		}
		root.Last = (*swzObj1)(unsafe.Pointer(&h.Device().Bytes()[offs[len(offs)-1]]))
		return nil
	}))
	check(b, h.View(func(tx *heap.Tx) error { return checkChain(tx, h, offs) }))
	var img []byte
	err = h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[crashRoot](tx)
		if err != nil {
			return err
		}
		for o := root.Last; o != nil; {
			next := o.P
			if err := heap.Set(tx, &o.P, o); err != nil {
				return err
			}
			o = next
		}
		d := emu.Device()
		dirty := d.DirtyLines()
		// Each object is a line of its own, so every change left one.
		if len(dirty) < crashedTxUpdates {
			return fmt.Errorf("%d dirty lines after %d updates", len(dirty), crashedTxUpdates)
		}
		img = d.CrashImage(dirty)
		return errCrash
	})
	if !errors.Is(err, errCrash) {
		b.Fatalf("crashing update: %v", err)
	}
	base, size := h.Base(), len(h.Device().Bytes())
	closed = true
	check(b, h.Close())
	// Left free, the crash's addresses are soon taken by something else
	// of this process, such as a thread's stack.
	hold, err := holdAddr(base, size)
	check(b, err)
	b.Cleanup(func() { hold.release() })
	imgPath := filepath.Join(dir, "image.pool")
	check(b, os.WriteFile(imgPath, img, 0o600))
	info, err := recovery.Inspect(imgPath)
	check(b, err)
	if info.Log.Entries != crashedTxUpdates || info.Log.Commit {
		b.Fatalf("crash image: undo log of %d entries, commit record %v; want %d entries and none",
			info.Log.Entries, info.Log.Commit, crashedTxUpdates)
	}
	return &crashedPool{img: img, offs: offs, hold: hold}
}

// checkChain checks that the chain of P from the root's Last runs through
// the objects at offs, from the last to the first, and ends there.
func checkChain(tx *heap.Tx, h *heap.Heap, offs []uint64) error {
	root, err := heap.Root[crashRoot](tx)
	if err != nil {
		return err
	}
	if root == nil {
		return errors.New("no root")
	}
	i := len(offs) - 1
	for o := root.Last; o != nil; o = o.P {
		off := uint64(uintptr(unsafe.Pointer(o)) - h.Base())
		if i < 0 || off != offs[i] {
			return fmt.Errorf("object %d of the chain is at offset %d, want the object allocated at offset %d", len(offs)-1-i, off, offs[max(i, 0)])
		}
		i--
	}
	if i != -1 {
		return fmt.Errorf("chain ends after %d objects, want %d", len(offs)-1-i, len(offs))
	}
	return nil
}

// benchRecoverOpen times Open of a fresh copy of c's image at path, at a
// new base when relocate is set, and checks c's objects after each.
// recover-ms is the whole Open: mapping, rollback, validation and, when
// relocated, the swizzle, which swizzle-ms and validate-ms report apart;
// ns/entry is recover-ms spread over the entries rolled back.
func benchRecoverOpen(b *testing.B, path string, c *crashedPool, relocate bool) {
	var (
		open, swz, validate time.Duration
		entries             int
	)
	runtime.GC()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		check(b, os.WriteFile(path, c.img, 0o600))
		if !relocate {
			check(b, c.hold.release())
		}
		b.StartTimer()
		t0 := time.Now()
		h, err := heap.Open(path, &heap.Options{ForceRelocate: relocate})
		open += time.Since(t0)
		b.StopTimer()
		check(b, err)
		r := h.Recovery()
		err = h.View(func(tx *heap.Tx) error { return checkChain(tx, h, c.offs) })
		// Closed before any failure, since the next run reopens the file
		// and would wait for its lock.
		check(b, errors.Join(err, h.Close(), c.hold.retake()))
		if r.RolledBack != crashedTxUpdates || r.Relocated != relocate {
			b.Fatalf("open rolled back %d entries (want %d), relocated %v (want %v): %+v",
				r.RolledBack, crashedTxUpdates, r.Relocated, relocate, r)
		}
		entries += r.RolledBack
		swz += r.Swizzle.Duration
		validate += r.Validate
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(open.Microseconds())/1e3/n, "recover-ms")
	b.ReportMetric(float64(entries)/n, "entries")
	b.ReportMetric(float64(open.Nanoseconds())/float64(entries), "ns/entry")
	if relocate {
		b.ReportMetric(float64(validate.Microseconds())/1e3/n, "validate-ms")
		b.ReportMetric(float64(swz.Microseconds())/1e3/n, "swizzle-ms")
	}
}

// addrHold keeps a range of addresses reserved, mapped with no access,
// while it is held.
type addrHold struct {
	addr uintptr
	size int
	p    unsafe.Pointer // nil when released
}

// holdAddr reserves [addr, addr+size), which must be free.
func holdAddr(addr uintptr, size int) (*addrHold, error) {
	a := &addrHold{addr: addr, size: size}
	return a, a.retake()
}

// retake reserves the range again after release.
func (a *addrHold) retake() error {
	if a.p != nil {
		return nil
	}
	// addr is not Go memory: going through a pointer variable only keeps
	// vet from taking it for a Go pointer hidden in a uintptr.
	hint := *(*unsafe.Pointer)(unsafe.Pointer(&a.addr))
	p, err := unix.MmapPtr(-1, 0, hint, uintptr(a.size), unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED_NOREPLACE)
	if err != nil {
		return fmt.Errorf("reserve [%#x, +%d): %w", a.addr, a.size, err)
	}
	if p != hint {
		_ = unix.MunmapPtr(p, uintptr(a.size))
		return fmt.Errorf("reserve [%#x, +%d): got %p", a.addr, a.size, p)
	}
	a.p = p
	return nil
}

// release frees the range for the next Open.
func (a *addrHold) release() error {
	if a.p == nil {
		return nil
	}
	p := a.p
	a.p = nil
	return unix.MunmapPtr(p, uintptr(a.size))
}
