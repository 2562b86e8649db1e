package device

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Msync is the Mapper for plain files: it maps the file shared, so that
// stores reach the page cache at once, and makes flushed ranges durable
// with msync at the next fence. It is the default device.
type Msync struct{}

// Map maps the first size bytes of f shared. f must be open for reading and
// writing.
func (Msync) Map(f *os.File, size int, req MapRequest) (Device, error) {
	m, err := mapGrowable(f, size, true, req)
	if err != nil {
		return nil, err
	}
	d := &msyncDevice{data: m.data, m: m, lo: 1, file: fileAccess{f: f}}
	d.file.size.Store(int64(size))
	return d, nil
}

// msyncDevice is the Device made by Msync.
type msyncDevice struct {
	data   []byte
	m      *mapping
	closed bool
	// lo and hi bound the lines flushed since the last fence; lo > hi when
	// none were.
	lo, hi int
	subs   subscribers
	file   fileAccess
}

// Bytes returns the mapping, or nil once closed.
func (d *msyncDevice) Bytes() []byte {
	return d.data
}

// Flush records the lines of [off, off+n) for the next fence. Nothing is
// written yet: msync is a syscall, and a commit's ranges are cheaper synced
// together at the fence.
func (d *msyncDevice) Flush(off, n int) {
	if d.closed {
		return
	}
	lo, hi, ok := lineSpan(off, n, len(d.data))
	if !ok {
		return
	}
	if d.lo > d.hi {
		d.lo, d.hi = lo, hi
	} else {
		d.lo, d.hi = min(d.lo, lo), max(d.hi, hi)
	}
	d.subs.writeBack(lo, hi-lo)
}

// Fence makes every range flushed since the last fence durable with one
// msync over the pages from the first to the last of them. A syscall costs
// far more than the kernel's walk over pages in between that are clean
// (measured here: one msync of 16 MiB costs what one of a page does, and
// two of a page cost twice that), and syncing a dirty page in between
// early is harmless: the engine is correct whenever a store reaches the
// media. Subscribers are told of the fence only if the msync succeeded.
// The ranges are dropped either way: after a failed msync the kernel may
// already have marked the pages clean, so a retry would prove nothing.
func (d *msyncDevice) Fence() error {
	if d.closed {
		return ErrClosed
	}
	if d.lo > d.hi {
		d.subs.fence()
		return nil
	}
	lo, hi := alignDown(d.lo, pageSize), min(alignUp(d.hi, pageSize), len(d.data))
	d.lo, d.hi = 1, 0
	if err := unix.Msync(d.data[lo:hi], unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync [%d, %d): %w", lo, hi, err)
	}
	d.subs.fence()
	return nil
}

// ReadAt reads the pool file at off, without touching the mapping: the
// mapping is shared, so the file holds what a load would return.
func (d *msyncDevice) ReadAt(p []byte, off int64) error {
	if d.closed {
		return ErrClosed
	}
	return d.file.ReadAt(p, off)
}

// WriteAt writes the pool file at off, without touching the mapping; the
// bytes become durable at the fence after a Flush of their range, since
// msync syncs the file's pages whichever way they were dirtied.
func (d *msyncDevice) WriteAt(p []byte, off int64) error {
	if d.closed {
		return ErrClosed
	}
	return d.file.WriteAt(p, off)
}

// Subscribe registers s for the write-backs and fences from now on.
func (d *msyncDevice) Subscribe(s Subscriber) (cancel func()) {
	return d.subs.add(s)
}

// Close unmaps the file. Ranges flushed but not fenced may not be durable,
// as in a crash. A second Close returns ErrClosed.
func (d *msyncDevice) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	d.data = nil
	return d.m.unmap()
}

// Grow extends the file and the shared mapping to size bytes.
func (d *msyncDevice) Grow(size int) error {
	if err := checkGrow(d.closed, &d.subs); err != nil {
		return err
	}
	if err := extendFile(d.file.f, len(d.data), size); err != nil {
		return err
	}
	if err := d.m.grow(size, true); err != nil {
		return err
	}
	d.data = d.m.data
	d.file.size.Store(int64(size))
	d.subs.grown(size)
	return nil
}

func (d *msyncDevice) sharesFile() {}
