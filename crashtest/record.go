package crashtest

import (
	"bytes"
	"fmt"

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
// the lines written but not yet durable, with their content then.
type point struct {
	op      int
	event   int
	journal int
	extras  []lineData
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
	op      int
	event   int
	// redundant counts flushes of lines that were already durable, per
	// operation.
	redundant map[int]int
}

func (c *recorder) begin(op int) { c.op = op }

func (c *recorder) hook(ev device.Event) {
	d := c.r.emu.Device()
	if d != c.dev {
		// A new mapping: what the old one had pending was dropped by Close.
		c.dev, c.pending = d, nil
	}
	event := c.event
	c.event++
	if c.op >= 0 && (ev.Kind == device.EventFence || c.r.o.Flushes) {
		c.take(d, event)
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
		if c.op >= 0 && bytes.Equal(work[lo:hi], dur[lo:hi]) {
			if c.redundant == nil {
				c.redundant = map[int]int{}
			}
			c.redundant[c.op]++
		}
	}
}

// take records a crash point at the current instant.
func (c *recorder) take(d *device.Emulated, event int) {
	p := point{op: c.op, event: event, journal: len(c.journal)}
	if c.r.o.Lines != LinesNone {
		work := d.Bytes()
		for _, l := range d.DirtyLines() {
			if len(p.extras) == maxExtraLines {
				break
			}
			e := lineData{line: l}
			copy(e.data[:], work[l*device.LineSize:])
			p.extras = append(p.extras, e)
		}
	}
	c.r.points = append(c.r.points, p)
}

// end lints the operation that just ended: stores it left not durable,
// flushes it left unfenced, and flushes of lines already durable.
func (c *recorder) end(h *heap.Heap) {
	op := c.op
	name := c.r.w.Ops[op].Name
	d := c.r.emu.Device()
	if d == nil {
		return
	}
	if dirty := d.DirtyLines(); len(dirty) > 0 {
		c.r.lint = append(c.r.lint, fmt.Sprintf("operation %d (%s) left %d lines written but not durable, the first at offset %d: a store without heap.Add or heap.Set?",
			op, name, len(dirty), dirty[0]*device.LineSize))
	}
	if pending := d.PendingLines(); len(pending) > 0 {
		c.r.lint = append(c.r.lint, fmt.Sprintf("operation %d (%s) ended with %d lines flushed but no fence after them", op, name, len(pending)))
	}
	if n := c.redundant[op]; n > 0 {
		c.r.lint = append(c.r.lint, fmt.Sprintf("operation %d (%s) flushed %d lines that were already durable", op, name, n))
	}
}
