package device

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Buffering is implemented by a Device whose stores reach the file only
// when the device writes their lines back: a line that was not flushed is,
// after a crash, what it was at its last flush. Code above such a device
// may store before the undo entries that cover the stores are durable,
// and may write a commit's ranges back after its commit record, since
// nothing it stores leaves memory before it asks.
type Buffering interface {
	BuffersStores() bool
}

// BuffersStores reports whether d buffers stores until they are flushed.
func BuffersStores(d Device) bool {
	b, ok := d.(Buffering)
	return ok && b.BuffersStores()
}

// Buffered is the Mapper for a plain file where a commit should cost one
// system call. The working mapping is private (copy-on-write), so stores
// stay in memory; a flush copies the lines into a second, shared mapping
// of the file, and a fence is one fdatasync. Against Msync, whose stores
// may reach the file at any time, the heap needs no fence between logging
// a range and changing it: a small transaction is durable with one fence
// instead of two. The price is memory: every page written is held twice,
// in the page cache and in the private copy.
type Buffered struct{}

// Map maps the first size bytes of f, which must be open for reading and
// writing and stay open until the device is closed.
func (Buffered) Map(f *os.File, size int, req MapRequest) (Device, error) {
	work, err := mapGrowable(f, size, false, req)
	if err != nil {
		return nil, err
	}
	file, err := mapGrowable(f, size, true, MapRequest{Reserve: req.Reserve})
	if err != nil {
		_ = work.unmap()
		return nil, fmt.Errorf("write-back mapping: %w", err)
	}
	return &bufferedDevice{f: f, work: work.data, file: file.data, mWork: work, mFile: file}, nil
}

// bufferedDevice is the Device made by Buffered.
type bufferedDevice struct {
	f            *os.File
	work, file   []byte
	mWork, mFile *mapping
	closed       bool
	subs         subscribers
}

// Grow extends the file to size bytes and both mappings with it; see
// Grower.
func (d *bufferedDevice) Grow(size int) error {
	if err := checkGrow(d.closed, &d.subs); err != nil {
		return err
	}
	if err := extendFile(d.f, len(d.work), size); err != nil {
		return err
	}
	if err := d.mWork.grow(size, true); err != nil {
		return err
	}
	if err := d.mFile.grow(size, true); err != nil {
		return fmt.Errorf("write-back mapping: %w", err)
	}
	d.work, d.file = d.mWork.data, d.mFile.data
	d.subs.grown(size)
	return nil
}

// BuffersStores reports true: see Buffering.
func (d *bufferedDevice) BuffersStores() bool { return true }

// Bytes returns the working mapping, or nil once closed.
func (d *bufferedDevice) Bytes() []byte { return d.work }

// Flush copies the lines of [off, off+n) into the file's page cache, from
// where they may reach the media at any time; the next fence waits until
// they have.
func (d *bufferedDevice) Flush(off, n int) {
	if d.closed {
		return
	}
	if lo, hi, ok := lineSpan(off, n, len(d.work)); ok {
		copy(d.file[lo:hi], d.work[lo:hi])
		d.subs.writeBack(lo, hi-lo)
	}
}

// Fence makes every line flushed so far durable, with one fdatasync.
func (d *bufferedDevice) Fence() error {
	if d.closed {
		return ErrClosed
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", d.f.Name(), err)
	}
	d.subs.fence()
	return nil
}

// Subscribe registers s for the write-backs and fences from now on.
func (d *bufferedDevice) Subscribe(s Subscriber) (cancel func()) {
	return d.subs.add(s)
}

// Close unmaps both mappings without a fence. A second Close returns
// ErrClosed.
func (d *bufferedDevice) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	d.work, d.file = nil, nil
	errWork, errFile := d.mWork.unmap(), d.mFile.unmap()
	if errWork != nil {
		return errWork
	}
	if errFile != nil {
		return fmt.Errorf("write-back mapping: %w", errFile)
	}
	return nil
}
