package device

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNotDax is returned by Dax.Map for a file that is not on a DAX file
// system (a MAP_SYNC mapping is refused) when Force is not set.
var ErrNotDax = errors.New("pmemgo: file is not on a DAX file system")

// mapSync is Linux's MAP_SYNC: with MAP_SHARED_VALIDATE, a mapping whose
// file metadata is durable whenever a page is writable, so that cache-line
// write-backs alone make stores durable.
const mapSync = 0x80000

// Instruction is the cache-line write-back instruction a Dax device uses.
type Instruction string

// The write-back instructions, best first: CLWB writes the line back and
// keeps it cached; CLFLUSHOPT evicts it, without ordering other flushes;
// CLFLUSH evicts it and is ordered with every other flush, the slowest.
const (
	CLWB       Instruction = "clwb"
	CLFLUSHOPT Instruction = "clflushopt"
	CLFLUSH    Instruction = "clflush"
)

// cpuFeatures are the write-back instructions a processor has.
type cpuFeatures struct{ clwb, clflushopt, clflush bool }

// best returns the best instruction of f, or "" when it has none.
func (f cpuFeatures) best() Instruction {
	switch {
	case f.clwb:
		return CLWB
	case f.clflushopt:
		return CLFLUSHOPT
	case f.clflush:
		return CLFLUSH
	}
	return ""
}

// DaxInstruction returns the write-back instruction a Dax device uses on
// this processor, or "" when it has none (then Dax.Map fails).
func DaxInstruction() Instruction { return cpuFlush().best() }

// Dax is the Mapper for persistent memory: a file on a DAX file system
// (fsdax), mapped with MAP_SYNC, where stores go straight to the media's
// address space. A flush writes the lines back with CLWB (else CLFLUSHOPT,
// else CLFLUSH) and a fence is SFENCE: no system call on the commit path.
// Like every device, it reports its write-backs to subscribers.
type Dax struct {
	// Force treats a file that is not on a DAX file system (tmpfs, a
	// plain file) as persistent memory, as PMDK's PMEM_IS_PMEM_FORCE
	// does: the instructions run, but they make nothing durable that the
	// page cache would not. For tests and benchmarks.
	Force bool
	// Instruction overrides the instruction chosen by CPUID, for tests; it
	// must be one the processor has.
	Instruction Instruction
}

// Map maps the first size bytes of f shared, with MAP_SYNC when the file
// system offers it.
func (x Dax) Map(f *os.File, size int, req MapRequest) (Device, error) {
	ins := x.Instruction
	if ins == "" {
		ins = DaxInstruction()
	}
	flush := flushers[ins]
	if flush == nil {
		return nil, fmt.Errorf("map %s: no cache-line write-back instruction %q on this processor: %w", f.Name(), ins, ErrNotDax)
	}
	sync := syncMappable(f)
	if !sync && !x.Force {
		return nil, fmt.Errorf("map %s: %w", f.Name(), ErrNotDax)
	}
	m, err := mapGrowable(f, size, true, req)
	if err != nil {
		return nil, err
	}
	if sync {
		if err := remapSync(f, m.data, 0); err != nil {
			_ = m.unmap()
			return nil, err
		}
	}
	return &daxDevice{data: m.data, m: m, flush: flush, ins: ins, sync: sync}, nil
}

// DaxMappable reports whether f is on a DAX file system (its file system
// accepts MAP_SYNC) and the processor has a write-back instruction: then
// Auto maps it with Dax. f may be open for reading only.
func DaxMappable(f *os.File) bool { return DaxInstruction() != "" && syncMappable(f) }

// syncMappable reports whether f's file system accepts MAP_SYNC, by
// mapping its first page so; read-only, which is enough for the file
// system to refuse a file that is not on DAX.
func syncMappable(f *os.File) bool {
	b, err := unix.Mmap(int(f.Fd()), 0, pageSize, unix.PROT_READ, unix.MAP_SHARED_VALIDATE|mapSync)
	if err != nil {
		return false
	}
	_ = unix.Munmap(b)
	return true
}

// remapSync replaces the shared mapping data of the file from offset off,
// which this process owns, with a MAP_SYNC mapping of the same file at
// the same place: MAP_FIXED over our own mapping, never over an address
// we do not own.
func remapSync(f *os.File, data []byte, off int) error {
	addr := unsafe.Pointer(unsafe.SliceData(data))
	p, err := unix.MmapPtr(int(f.Fd()), int64(off), addr, uintptr(len(data)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED_VALIDATE|mapSync|unix.MAP_FIXED)
	if err != nil {
		return fmt.Errorf("map %s with MAP_SYNC: %w", f.Name(), err)
	}
	if p != addr {
		return fmt.Errorf("map %s with MAP_SYNC: placed at %p, not %p", f.Name(), p, addr)
	}
	return nil
}

// daxDevice is the Device made by Dax.
type daxDevice struct {
	data   []byte
	m      *mapping
	flush  func(unsafe.Pointer, uintptr)
	ins    Instruction
	sync   bool
	closed bool
	subs   subscribers
}

// Bytes returns the mapping, or nil once closed.
func (d *daxDevice) Bytes() []byte { return d.data }

// Flush writes the lines of [off, off+n) back from the cache.
func (d *daxDevice) Flush(off, n int) {
	if d.closed {
		return
	}
	lo, hi, ok := lineSpan(off, n, len(d.data))
	if !ok {
		return
	}
	d.flush(unsafe.Pointer(&d.data[lo]), uintptr((hi-lo)/LineSize))
	d.subs.writeBack(lo, hi-lo)
}

// Fence waits for the write-backs flushed before it.
func (d *daxDevice) Fence() error {
	if d.closed {
		return ErrClosed
	}
	fence()
	d.subs.fence()
	return nil
}

// Subscribe registers s for the write-backs and fences from now on.
func (d *daxDevice) Subscribe(s Subscriber) (cancel func()) { return d.subs.add(s) }

// Instruction returns the write-back instruction the device uses.
func (d *daxDevice) Instruction() Instruction { return d.ins }

// Synchronous reports whether the mapping is a MAP_SYNC one, on a DAX
// file system, rather than one forced on another file system.
func (d *daxDevice) Synchronous() bool { return d.sync }

// Close unmaps the file. A second Close returns ErrClosed.
func (d *daxDevice) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	d.data = nil
	return d.m.unmap()
}

// Grow extends the file and the mapping to size bytes, the new part with
// MAP_SYNC too when the pool is on a DAX file system.
func (d *daxDevice) Grow(size int) error {
	if err := checkGrow(d.closed, &d.subs); err != nil {
		return err
	}
	old := d.m.mapped
	if err := extendFile(d.m.f, len(d.data), size); err != nil {
		return err
	}
	if err := d.m.grow(size, true); err != nil {
		return err
	}
	if d.sync && d.m.mapped > old {
		tail := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(d.m.data)), old)), d.m.mapped-old)
		if err := remapSync(d.m.f, tail, old); err != nil {
			return err
		}
	}
	d.data = d.m.data
	d.subs.grown(size)
	return nil
}

// Auto is the default Mapper for a read-write pool: Dax when the file is
// on a DAX file system, Msync otherwise.
type Auto struct{}

// Map maps f with Dax if its file system accepts MAP_SYNC and the
// processor has a write-back instruction, else with Msync.
func (Auto) Map(f *os.File, size int, req MapRequest) (Device, error) {
	if DaxMappable(f) {
		return Dax{}.Map(f, size, req)
	}
	return Msync{}.Map(f, size, req)
}

func (d *daxDevice) sharesFile() {}
