package device

import (
	"cmp"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Msync is the Mapper for plain files: it maps the file shared, so that
// stores reach the page cache at once, and makes flushed ranges durable
// with msync at the next fence. It is the default device.
type Msync struct{}

// Map maps the first size bytes of f shared. f must be open for reading and
// writing.
func (Msync) Map(f *os.File, size int, req MapRequest) (Device, error) {
	data, unmap, err := mapFile(f, size, true, req)
	if err != nil {
		return nil, err
	}
	return &msyncDevice{data: data, unmap: unmap}, nil
}

// span is a byte range [lo, hi) of a mapping.
type span struct {
	lo, hi int
}

// msyncDevice is the Device made by Msync.
type msyncDevice struct {
	data   []byte
	unmap  func() error
	closed bool
	// flushed holds the line ranges flushed since the last fence. It keeps
	// its capacity across fences so that steady-state commits do not
	// allocate.
	flushed []span
	subs    subscribers
}

// Bytes returns the mapping, or nil once closed.
func (d *msyncDevice) Bytes() []byte {
	return d.data
}

// Flush records the lines of [off, off+n) for the next fence. Nothing is
// written yet: msync is a syscall, and a commit's ranges are cheaper synced
// together, page runs merged, at the fence.
func (d *msyncDevice) Flush(off, n int) {
	if d.closed {
		return
	}
	lo, hi, ok := lineSpan(off, n, len(d.data))
	if !ok {
		return
	}
	d.record(span{lo, hi})
	d.subs.writeBack(lo, hi-lo)
}

// record adds s to the flushed ranges, merged into the last one when they
// touch, as consecutive flushes of a structure often do.
func (d *msyncDevice) record(s span) {
	if n := len(d.flushed); n > 0 {
		last := &d.flushed[n-1]
		if s.lo <= last.hi && last.lo <= s.hi {
			last.lo, last.hi = min(last.lo, s.lo), max(last.hi, s.hi)
			return
		}
	}
	d.flushed = append(d.flushed, s)
}

// Fence msyncs the pages of every range flushed since the last fence.
// Subscribers are told of the fence only if every msync succeeded, since
// otherwise the ranges are not known to be durable. The ranges are dropped
// either way: after a failed msync the kernel may already have marked the
// pages clean, so a retry would prove nothing.
func (d *msyncDevice) Fence() error {
	if d.closed {
		return ErrClosed
	}
	runs := pageRuns(d.flushed)
	var first error
	for _, r := range runs {
		if err := unix.Msync(d.data[r.lo:min(r.hi, len(d.data))], unix.MS_SYNC); err != nil && first == nil {
			first = fmt.Errorf("msync [%d, %d): %w", r.lo, r.hi, err)
		}
	}
	d.flushed = d.flushed[:0]
	if first != nil {
		return first
	}
	d.subs.fence()
	return nil
}

// pageRuns widens spans to whole pages, sorts them and merges those that
// overlap or touch, so that each run costs one msync. It works in place and
// returns the runs in the prefix of spans.
func pageRuns(spans []span) []span {
	for i := range spans {
		spans[i] = span{alignDown(spans[i].lo, pageSize), alignUp(spans[i].hi, pageSize)}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	runs := spans[:0]
	for _, s := range spans {
		if n := len(runs); n > 0 && s.lo <= runs[n-1].hi {
			runs[n-1].hi = max(runs[n-1].hi, s.hi)
			continue
		}
		runs = append(runs, s)
	}
	return runs
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
	d.data, d.flushed = nil, nil
	return d.unmap()
}
