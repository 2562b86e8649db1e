package device

import (
	"fmt"
	"os"
)

// Private is the Mapper for read-only opens: it maps the file privately
// (copy-on-write), so that recovery can repair the pool in memory while the
// file, which may be open read-only, is never written. Flush and Fence make
// nothing durable but are still reported to subscribers, so that the code
// above behaves as on any other device.
type Private struct{}

// Map maps the first size bytes of f privately. f may be read-only. A
// file registered with RegisterPrivate is mapped by its Mapper instead.
func (Private) Map(f *os.File, size int, req MapRequest) (Device, error) {
	if m := registeredPrivate(f); m != nil {
		return m.Map(f, size, req)
	}
	m, err := mapGrowable(f, size, false, req)
	if err != nil {
		return nil, err
	}
	return &privateDevice{data: m.data, m: m}, nil
}

// privateDevice is the Device made by Private.
type privateDevice struct {
	data   []byte
	m      *mapping
	closed bool
	subs   subscribers
}

// Bytes returns the mapping, or nil once closed.
func (d *privateDevice) Bytes() []byte {
	return d.data
}

// Flush reports the lines of [off, off+n) to subscribers and writes
// nothing.
func (d *privateDevice) Flush(off, n int) {
	if d.closed {
		return
	}
	if lo, hi, ok := lineSpan(off, n, len(d.data)); ok {
		d.subs.writeBack(lo, hi-lo)
	}
}

// Fence reports the fence to subscribers and writes nothing.
func (d *privateDevice) Fence() error {
	if d.closed {
		return ErrClosed
	}
	d.subs.fence()
	return nil
}

// Subscribe registers s for the write-backs and fences from now on.
func (d *privateDevice) Subscribe(s Subscriber) (cancel func()) {
	return d.subs.add(s)
}

// Close drops the mapping and every change made to it. A second Close
// returns ErrClosed.
func (d *privateDevice) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	d.data = nil
	return d.m.unmap()
}

// Grow extends the mapping to size bytes without touching the file, which
// a private device never writes: the new part maps the file where it is
// long enough already and zero memory otherwise, and like every change
// made through the device it is gone at Close.
func (d *privateDevice) Grow(size int) error {
	if err := checkGrow(d.closed, &d.subs); err != nil {
		return err
	}
	fi, err := d.m.f.Stat()
	if err != nil {
		return fmt.Errorf("grow: %w", err)
	}
	if err := d.m.grow(size, fi.Size() >= int64(size)); err != nil {
		return err
	}
	d.data = d.m.data
	d.subs.grown(size)
	return nil
}
