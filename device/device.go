// Package device is where persistence happens. A Device owns the mapping of
// a pool file and makes ranges of it durable: Flush starts the write-back of
// a range, Fence waits until everything flushed before it is durable.
//
// Two implementations exist. Msync maps the file shared and makes ranges
// durable with msync. Emulated maps the file privately, so that stores reach
// the file only when the device writes their 64-byte lines back; it keeps
// the durable state apart from the working mapping and can build the image
// a crash at any instant would leave. Private maps the file privately and
// never writes anything back; read-only opens use it so that recovery can
// run in memory without touching the file.
//
// Every device reports what it writes back to its subscribers, so that a
// write-back tracker works whichever device is in use.
package device

import (
	"errors"
	"os"
)

// LineSize is the write-back granularity: one CPU cache line.
const LineSize = 64

var (
	// ErrClosed is returned by a Device used after Close.
	ErrClosed = errors.New("pmemgo: device is closed")

	// ErrNoAddress is returned by Map when the hint is unavailable and
	// every address the kernel offered overlaps a range to avoid.
	ErrNoAddress = errors.New("pmemgo: no mapping address outside the ranges to avoid")
)

// Device is a mapped pool file and the means of making ranges of it
// durable. Offsets are relative to the start of the mapping. A Device is
// used by one writer at a time; Bytes may be read concurrently.
type Device interface {
	// Bytes returns the working mapping. Its address is the pool's base.
	Bytes() []byte
	// Flush starts the write-back of [off, off+n), widened to whole lines.
	// The range is durable only after the next Fence.
	Flush(off, n int)
	// Fence returns once every range flushed before it is durable.
	Fence() error
	// Subscribe registers s to be told of every write-back and fence from
	// now on. The returned function cancels the subscription.
	Subscribe(s Subscriber) (cancel func())
	// Close unmaps the pool without making anything more durable: what was
	// not fenced may be lost, as in a crash.
	Close() error
}

// Subscriber is told of write-backs. Calls happen on the goroutine that
// flushes or fences and must not block for long.
type Subscriber interface {
	// WriteBack reports that [off, off+n) was flushed: it becomes durable at
	// the next fence. off and n are multiples of LineSize.
	WriteBack(off, n int)
	// Fence reports that every range reported before it is durable.
	Fence()
}

// GrowthFollower is a Subscriber that follows the pool's growth: a device
// grows while subscribers are registered only if each is one (a
// replication mirror's tracker is), and tells them the new size.
type GrowthFollower interface {
	Subscriber
	// Grown reports that the pool is now size bytes long, the new part
	// mapped right after the old one. It is called by Grow, on its
	// goroutine, once the new part is mapped and before Grow returns, so
	// before any write-back in it is reported.
	Grown(size int)
}

// Mapper maps pool files as Devices. Options of the heap take a Mapper, so
// that the device is chosen at open.
type Mapper interface {
	// Map maps the first size bytes of f. f stays owned by the caller and
	// must remain open until the Device is closed.
	Map(f *os.File, size int, req MapRequest) (Device, error)
}

// MapRequest says where a mapping may be placed.
type MapRequest struct {
	// Hint is the address to try first, with MAP_FIXED_NOREPLACE, so that
	// an address in use is never replaced. Zero means anywhere.
	Hint uintptr
	// Avoid lists address ranges the mapping must not overlap: the ranges
	// that pointers stored in the pool may still refer to.
	Avoid []Range
	// Reserve, when larger than the size mapped, is the address space to
	// reserve for the pool to grow into (see Grower): the mapping is
	// placed at the start of a free range of Reserve bytes, and Hint and
	// Avoid apply to the whole range. Mappers that cannot grow a pool
	// ignore it.
	Reserve int
}

// Range is a range of virtual addresses.
type Range struct {
	Start, Len uintptr
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.Start < o.Start+o.Len && o.Start < r.Start+r.Len
}

// SharesFile reports whether d's mapping is the file itself (a shared
// mapping): what the mapping holds, the file holds, so the file can be
// read for the mapping's bytes (a copy with copy_file_range, for one).
// An emulated or private device keeps its stores apart from the file.
func SharesFile(d Device) bool {
	_, ok := d.(interface{ sharesFile() })
	return ok
}
