package crashtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

// maxExtraLines bounds the not-yet-durable lines remembered per crash
// point; a point with more dirty lines keeps the first ones.
const maxExtraLines = 256

// lineData is one cache line's content.
type lineData struct {
	line int
	data [device.LineSize]byte
}

// point is a crash point: what was durable (a prefix of the journal) and
// the lines written but not yet durable, with their content then. event
// counts the device events of operation op before the crash; the point
// after an operation's last event has end set.
type point struct {
	op    int
	event int
	// flush is set for a point before a flush, end for the point after
	// the operation's last event.
	flush, end bool
	journal    int
	extras     []lineData
}

// recorder is the device hook. It mirrors the emulated device: lines
// captured by flushes become journal entries when a fence makes them
// durable, so that the durable state at any crash point is the initial
// file plus a prefix of the journal, and no point costs a copy of the pool.
type recorder struct {
	r       *runner
	initial []byte
	journal []lineData
	pending []lineData
	dev     *device.Emulated
	// op is the operation running, -1 for Setup and Close; event counts
	// its device events.
	op    int
	event int
	// redundant counts flushes of lines that were already durable, per
	// operation.
	redundant map[int]int
}

// begin starts numbering the events of operation op from 0, so that ids
// do not depend on what ran before it.
func (c *recorder) begin(op int) { c.op, c.event = op, 0 }

func (c *recorder) hook(ev device.Event) {
	d := c.r.emu.Device()
	if d != c.dev {
		// A new mapping: what the old one had pending was dropped by Close.
		c.dev, c.pending = d, nil
	}
	event := c.event
	c.event++
	if c.op >= 0 {
		// Points before flushes are taken whatever the options, so that a
		// replay id naming one can be checked under any options.
		c.take(d, event, false)
		c.r.points[len(c.r.points)-1].flush = ev.Kind == device.EventFlush
	}
	switch ev.Kind {
	case device.EventFlush:
		c.flush(d, ev.Off, ev.Len)
	case device.EventFence:
		c.journal = append(c.journal, c.pending...)
		c.pending = c.pending[:0]
	}
}

// flush captures the lines of a flush as the device does, and counts
// those that were durable already.
func (c *recorder) flush(d *device.Emulated, off, n int) {
	work, dur := d.Bytes(), d.Durable()
	if off < 0 || n <= 0 || off >= len(work) {
		return
	}
	end := min(off+n, len(work))
	for l := off / device.LineSize; l*device.LineSize < end; l++ {
		lo, hi := l*device.LineSize, min((l+1)*device.LineSize, len(work))
		e := lineData{line: l}
		copy(e.data[:], work[lo:hi])
		c.pending = append(c.pending, e)
		if c.op >= 0 && c.r.o.LintFlushes && bytes.Equal(work[lo:hi], dur[lo:hi]) {
			if c.redundant == nil {
				c.redundant = map[int]int{}
			}
			c.redundant[c.op]++
		}
	}
}

// take records a crash point at the current instant. The lines not yet
// durable are always kept, whatever the options, so that a replay id
// naming some of them can be checked under any options.
func (c *recorder) take(d *device.Emulated, event int, end bool) {
	p := point{op: c.op, event: event, end: end, journal: len(c.journal)}
	for _, l := range d.DirtyLines() {
		if len(p.extras) == maxExtraLines {
			break
		}
		e := lineData{line: l}
		copy(e.data[:], d.LineContent(l))
		p.extras = append(p.extras, e)
	}
	c.r.points = append(c.r.points, p)
}

// record runs the workload once on the emulated device, taking the crash
// points. The pool is created and closed first, so that the initial
// image is a clean pool; Setup and the operations then run on one open,
// at a new base.
// An operation that returns an error is reported as refused, its crash
// points dropped, and the operations after it are not run.
func (r *runner) record() error {
	path := filepath.Join(r.poolDir(), "pool")
	size := r.w.Size
	if size == 0 {
		size = 2 << 20
	}
	// The pool keeps its size: crash images are all the size of the
	// initial one. Growth is crash-tested by the heap's own tests.
	h, err := heap.Open(path, &heap.Options{Size: size, MaxSize: size, SlabSize: r.w.SlabSize, LogSize: r.w.LogSize})
	if err != nil {
		return err
	}
	if err := h.Close(); err != nil {
		return err
	}
	initial, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r.rec = recorder{r: r, initial: initial, op: -1}
	r.emu = &device.Emulator{Hook: r.rec.hook, Buffered: r.o.Buffered}
	// The pool is always moved from the base it was created at, so that
	// the open writes the same things (the open mark, the relocated
	// header) whether or not that base is free, and the events of the
	// operations, which ids count, do not depend on it.
	if h, err = heap.Open(path, &heap.Options{Device: r.emu, ForceRelocate: true}); err != nil {
		return err
	}
	if r.w.Setup != nil {
		if err := protect(func() error { return r.w.Setup(h) }); err != nil {
			r.refuse(-1, fmt.Errorf("setup: %w", err))
			return h.Close()
		}
	}
	for i, op := range r.w.Ops {
		r.rec.begin(i)
		if op.relocate {
			err = h.Close()
			if err == nil {
				h, err = heap.Open(path, &heap.Options{Device: r.emu, ForceRelocate: true})
			}
			if err != nil {
				return fmt.Errorf("operation %d (relocate): %w", i, err)
			}
		} else if err := protect(func() error { return op.Run(h) }); err != nil {
			r.dropPoints(i)
			r.refuse(i, fmt.Errorf("operation %d (%s) refused: %w", i, op.Name, err))
			break
		}
		r.rec.end()
	}
	r.rec.begin(-1)
	return h.Close()
}

// poolDir returns the directory to record the workload's pool in: one in
// /dev/shm when there is one, since creating a pool syncs it and its
// directory, which costs little there, else the test's temporary
// directory. Either is removed when the test ends.
func (r *runner) poolDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "pmemgo-crashtest-"); err == nil {
			r.t.Cleanup(func() { _ = os.RemoveAll(dir) })
			return dir
		}
	}
	return r.dir
}

// protect runs fn, turning a panic into an error.
func protect(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}

// dropPoints forgets the crash points of operation op.
func (r *runner) dropPoints(op int) {
	n := 0
	for _, p := range r.points {
		if p.op != op {
			r.points[n] = p
			n++
		}
	}
	r.points = r.points[:n]
}

// end takes the point after the operation's last event, whose durable
// state is the state the operation leaves, and lints the operation:
// stores it left not durable, flushes it left unfenced, and, when asked,
// flushes of lines already durable.
func (c *recorder) end() {
	op := c.op
	name := c.r.w.Ops[op].Name
	d := c.r.emu.Device()
	if d == nil {
		return
	}
	c.take(d, c.event, true)
	if dirty := d.UnflushedLines(); len(dirty) > 0 {
		c.r.lint = append(c.r.lint, fmt.Sprintf("operation %d (%s) left %d lines written but not durable, the first at %s: a store without heap.Add or heap.Set?",
			op, name, len(dirty), locate(d.Bytes(), dirty[0]*device.LineSize, d.Durable())))
	}
	// On a buffered device a commit writes its ranges back after its
	// record on purpose, to be fenced by the next commit.
	if pending := d.PendingLines(); len(pending) > 0 && !d.BuffersStores() {
		c.r.lint = append(c.r.lint, fmt.Sprintf("operation %d (%s) ended with %d lines flushed but no fence after them", op, name, len(pending)))
	}
	if n := c.redundant[op]; n > 0 {
		c.r.lint = append(c.r.lint, fmt.Sprintf("operation %d (%s) flushed %d lines that were already durable", op, name, n))
	}
}
