package device

import (
	"fmt"
	"os"
	"sync/atomic"
)

// maxKeptPending is the number of pending lines whose storage a fence keeps
// for reuse. A commit flushes a handful of lines; the storage left by one
// huge flush, such as the formatting of a new pool, is released instead of
// being held for the life of the device.
const maxKeptPending = 4096

// EventKind says which call an Event reports.
type EventKind int

const (
	// EventFlush is a call to Flush.
	EventFlush EventKind = iota
	// EventFence is a call to Fence.
	EventFence
)

// String returns "flush" or "fence".
func (k EventKind) String() string {
	switch k {
	case EventFlush:
		return "flush"
	case EventFence:
		return "fence"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a call to Flush or Fence of an Emulated device, reported to the
// Emulator's Hook before the call takes effect.
type Event struct {
	Kind EventKind
	// Seq numbers the events of one device from 0, flushes and fences
	// alike.
	Seq int
	// Off and Len are the arguments of Flush, as passed; zero for a fence.
	Off, Len int
}

// Stats counts what an Emulated device did.
type Stats struct {
	Flushes int
	Fences  int
	// LinesWrittenBack counts the lines flushed, each time it was flushed.
	LinesWrittenBack int
}

// Emulator is the Mapper for the emulated persistent-memory device, used
// by tests, crash injection and the write-back tracker. Its zero value is
// ready to use; it must not be copied after first use.
type Emulator struct {
	// Hook, if set, is called at the start of every Flush and Fence of the
	// devices mapped from now on, before the call takes effect, on the
	// goroutine that flushes. It may call the read methods of the device,
	// such as CrashImage, to see what a crash at that instant would leave.
	Hook func(Event)
	// FileAccess makes the devices offer FileAccess, as the msync device
	// does, so that crash tests cover the passes that copy the pool
	// through it (a relocating open). Its reads and writes are loads and
	// stores of the working mapping: durable only once flushed and fenced.
	FileAccess bool
	// Buffered gives the devices the semantics of Buffered instead of
	// persistent memory's: a store reaches the media only through a
	// flush, and a crash leaves each line as durable or as last flushed,
	// never with stores made after its flush. The devices then report
	// BuffersStores, so that the heap runs the protocol it runs on
	// Buffered, and crash tests cover that.
	Buffered bool

	last atomic.Pointer[Emulated]
}

// Map maps the first size bytes of f as an Emulated device. f must be open
// for reading and writing, since fences write the file.
func (e *Emulator) Map(f *os.File, size int, req MapRequest) (Device, error) {
	d, err := mapEmulated(f, size, req, e.Hook)
	if err != nil {
		return nil, err
	}
	d.buffered = e.Buffered
	e.last.Store(d)
	if e.FileAccess {
		return emulatedFile{d}, nil
	}
	return d, nil
}

// emulatedFile is an Emulated device that offers FileAccess.
type emulatedFile struct{ *Emulated }

// ReadAt loads len(p) bytes of the working mapping at off.
func (d emulatedFile) ReadAt(p []byte, off int64) error {
	if err := d.access(p, off); err != nil {
		return err
	}
	copy(p, d.work[off:])
	return nil
}

// WriteAt stores p into the working mapping at off.
func (d emulatedFile) WriteAt(p []byte, off int64) error {
	if err := d.access(p, off); err != nil {
		return err
	}
	copy(d.work[off:], p)
	return nil
}

func (d emulatedFile) access(p []byte, off int64) error {
	if d.closed {
		return ErrClosed
	}
	if off < 0 || off > int64(len(d.work)) || int64(len(p)) > int64(len(d.work))-off {
		return fmt.Errorf("pool access [%d, +%d) outside the %d mapped bytes", off, len(p), len(d.work))
	}
	return nil
}

// Device returns the device most recently mapped by e, or nil if none was.
func (e *Emulator) Device() *Emulated {
	return e.last.Load()
}

// Emulated is a Device with the semantics of persistent memory behind a
// write-back cache: a store is durable only once its line was flushed and
// a fence followed. The working mapping, which Bytes returns, is a private
// copy-on-write mapping of the file, so stores never reach the file by
// themselves. A second, shared mapping holds what is durable: a fence
// copies the flushed lines into it, and a crash is Close without that copy.
//
// Like every Device, an Emulated is used by one goroutine at a time; its
// read methods must be called from that goroutine, from the Hook, or while
// it is idle.
type Emulated struct {
	work, durable []byte
	// mWork and mShadow are the working and durable mappings, each in a
	// reservation of its own when the pool may grow.
	mWork, mShadow *mapping
	closed         bool
	buffered       bool
	hook           func(Event)
	seq            int
	stats          Stats
	// pending holds the lines flushed since the last fence, each with its
	// content at the time of the flush, in flush order.
	pending []pendingLine
	subs    subscribers
}

// pendingLine is a flushed line's content, captured at the flush as a
// cache line write-back would capture it: stores after the flush are not
// covered by it.
type pendingLine struct {
	line int
	data [LineSize]byte
}

// mapEmulated maps the working mapping where req asks and the durable
// shadow anywhere. The working mapping goes first so that the shadow cannot
// take the hinted address.
func mapEmulated(f *os.File, size int, req MapRequest, hook func(Event)) (*Emulated, error) {
	work, err := mapGrowable(f, size, false, req)
	if err != nil {
		return nil, err
	}
	durable, err := mapGrowable(f, size, true, MapRequest{Reserve: req.Reserve})
	if err != nil {
		_ = work.unmap()
		return nil, fmt.Errorf("durable shadow: %w", err)
	}
	return &Emulated{
		work: work.data, durable: durable.data,
		mWork: work, mShadow: durable,
		hook: hook,
	}, nil
}

// Grow extends the file to size bytes and both mappings with it. The
// extension is durable at once, as the file's size is; the new bytes are
// zeros in the working mapping and in the durable state alike. A
// Durable view taken before Grow stays valid but does not cover the new
// part.
func (d *Emulated) Grow(size int) error {
	if err := checkGrow(d.closed, &d.subs); err != nil {
		return err
	}
	if err := extendFile(d.mWork.f, len(d.work), size); err != nil {
		return err
	}
	if err := d.mWork.grow(size, true); err != nil {
		return err
	}
	if err := d.mShadow.grow(size, true); err != nil {
		return fmt.Errorf("durable shadow: %w", err)
	}
	d.work, d.durable = d.mWork.data, d.mShadow.data
	d.subs.grown(size)
	return nil
}

// Bytes returns the working mapping, or nil once closed.
func (d *Emulated) Bytes() []byte {
	return d.work
}

// BuffersStores reports whether the device was mapped by an Emulator with
// Buffered set.
func (d *Emulated) BuffersStores() bool { return d.buffered }

// Flush captures the current content of the lines of [off, off+n); the
// next fence makes that content durable.
func (d *Emulated) Flush(off, n int) {
	if d.closed {
		return
	}
	d.event(EventFlush, off, n)
	d.stats.Flushes++
	lo, hi, ok := lineSpan(off, n, len(d.work))
	if !ok {
		return
	}
	for l := lo / LineSize; l < hi/LineSize; l++ {
		d.pending = append(d.pending, pendingLine{line: l})
		copy(d.pending[len(d.pending)-1].data[:], d.work[l*LineSize:])
	}
	d.stats.LinesWrittenBack += (hi - lo) / LineSize
	d.subs.writeBack(lo, hi-lo)
}

// Fence makes the lines captured by every flush since the last fence
// durable, in flush order, so that a line flushed twice ends with its later
// content.
func (d *Emulated) Fence() error {
	if d.closed {
		return ErrClosed
	}
	d.event(EventFence, 0, 0)
	d.stats.Fences++
	for i := range d.pending {
		p := &d.pending[i]
		copy(d.durable[p.line*LineSize:], p.data[:])
	}
	if cap(d.pending) > maxKeptPending {
		d.pending = nil
	} else {
		d.pending = d.pending[:0]
	}
	d.subs.fence()
	return nil
}

// event numbers a call and reports it to the hook.
func (d *Emulated) event(kind EventKind, off, n int) {
	seq := d.seq
	d.seq++
	if d.hook != nil {
		d.hook(Event{Kind: kind, Seq: seq, Off: off, Len: n})
	}
}

// Subscribe registers s for the write-backs and fences from now on.
func (d *Emulated) Subscribe(s Subscriber) (cancel func()) {
	return d.subs.add(s)
}

// Close unmaps both mappings. Lines flushed but not fenced are dropped, as
// in a crash; the file keeps exactly what was durable. A second Close
// returns ErrClosed.
func (d *Emulated) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	d.work, d.durable, d.pending = nil, nil, nil
	errWork, errShadow := d.mWork.unmap(), d.mShadow.unmap()
	if errWork != nil {
		return errWork
	}
	if errShadow != nil {
		return fmt.Errorf("durable shadow: %w", errShadow)
	}
	return nil
}
