package device

import (
	"bytes"
	"slices"
)

// Durable returns the durable state: the file's contents, which a crash
// now would leave. It is a view of the shared mapping, valid until Close;
// callers must not write to it, since that would make data durable behind
// the device's back.
func (d *Emulated) Durable() []byte {
	return d.durable
}

// CrashImage returns a fresh copy of the durable state with the current
// working content of the given lines on top: the image a crash would leave
// if exactly those lines, not yet durable, had reached the media. A nil
// lines gives strictly what is durable. Line k covers bytes [64k, 64k+64);
// indices outside the mapping are ignored. It returns nil once closed.
//
// On a buffered device (Emulator.Buffered) a line reaches the media only
// as it was when last flushed: a line given takes its content of the
// latest flush since the last fence, and one not flushed since is left
// as durable.
func (d *Emulated) CrashImage(lines []int) []byte {
	if d.closed {
		return nil
	}
	img := bytes.Clone(d.durable)
	var last map[int]int
	if d.buffered {
		last = d.lastFlushes()
	}
	for _, l := range lines {
		off := l * LineSize
		if l < 0 || off >= len(img) {
			continue
		}
		dst := img[off:min(off+LineSize, len(img))]
		switch i, flushed := last[l]; {
		case !d.buffered:
			copy(dst, d.work[off:])
		case flushed:
			copy(dst, d.pending[i].data[:])
		}
	}
	return img
}

// LineContent returns the content line l would have on the media if it
// reached the media now: its working content, or on a buffered device
// its content at its latest flush since the last fence (nil when it was
// not flushed since). The slice is valid until the next Flush or Fence.
func (d *Emulated) LineContent(l int) []byte {
	off := l * LineSize
	if d.closed || l < 0 || off >= len(d.work) {
		return nil
	}
	if !d.buffered {
		return d.work[off:min(off+LineSize, len(d.work))]
	}
	if i, ok := d.lastFlushes()[l]; ok {
		return d.pending[i].data[:min(LineSize, len(d.work)-off)]
	}
	return nil
}

// lastFlushes maps each line flushed since the last fence to the index in
// pending of its latest flush.
func (d *Emulated) lastFlushes() map[int]int {
	last := make(map[int]int, len(d.pending))
	for i := range d.pending {
		last[d.pending[i].line] = i
	}
	return last
}

// UnflushedLines returns, in increasing order, the lines whose working
// content differs from what they will hold once the flushes made so far
// are fenced: stores made without a flush after them.
func (d *Emulated) UnflushedLines() []int {
	var out []int
	last := d.lastFlushes()
	for _, l := range d.dirtyByContent() {
		off := l * LineSize
		work := d.work[off:min(off+LineSize, len(d.work))]
		flushed := d.durable[off:min(off+LineSize, len(d.work))]
		if i, ok := last[l]; ok {
			flushed = d.pending[i].data[:len(work)]
		}
		if !bytes.Equal(work, flushed) {
			out = append(out, l)
		}
	}
	return out
}

// DirtyLines returns, in increasing order, the lines that a crash now
// could leave different from the durable state: on persistent memory,
// those whose working content differs from it, flushed or not; on a
// buffered device (Emulator.Buffered), those flushed since the last fence
// with content that differs from it. It returns nil once closed.
func (d *Emulated) DirtyLines() []int {
	if !d.buffered {
		return d.dirtyByContent()
	}
	var dirty []int
	last := d.lastFlushes()
	for _, l := range d.PendingLines() {
		off := l * LineSize
		c := d.pending[last[l]].data[:min(LineSize, len(d.work)-off)]
		if !bytes.Equal(c, d.durable[off:off+len(c)]) {
			dirty = append(dirty, l)
		}
	}
	return dirty
}

// dirtyByContent returns the lines whose working content differs from the
// durable state.
func (d *Emulated) dirtyByContent() []int {
	if d.closed {
		return nil
	}
	var dirty []int
	// Only the pages the working mapping copied on write can differ from
	// the file; asking the kernel which they are spares comparing the
	// whole pool at every crash point. Whole pages are compared first
	// because most of a pool is clean and comparing a page at once is far
	// quicker than line by line.
	written, known := writtenPages(d.work)
	for p := 0; p < len(d.work); p += pageSize {
		if known && !written[p/pageSize] {
			continue
		}
		end := min(p+pageSize, len(d.work))
		if !bytes.Equal(d.work[p:end], d.durable[p:end]) {
			dirty = appendDirtyLines(dirty, d.work[p:end], d.durable[p:end], p/LineSize)
		}
	}
	return dirty
}

// appendDirtyLines appends to dirty the indices of the lines where work and
// durable differ, first being the index of their first line.
func appendDirtyLines(dirty []int, work, durable []byte, first int) []int {
	for off := 0; off < len(work); off += LineSize {
		end := min(off+LineSize, len(work))
		if !bytes.Equal(work[off:end], durable[off:end]) {
			dirty = append(dirty, first+off/LineSize)
		}
	}
	return dirty
}

// PendingLines returns, in increasing order and once each, the lines
// flushed since the last fence. It returns nil once closed.
func (d *Emulated) PendingLines() []int {
	if d.closed {
		return nil
	}
	lines := make([]int, 0, len(d.pending))
	for i := range d.pending {
		lines = append(lines, d.pending[i].line)
	}
	slices.Sort(lines)
	return slices.Compact(lines)
}

// Stats returns the counts of flushes, fences and lines written back since
// the device was mapped.
func (d *Emulated) Stats() Stats {
	return d.stats
}
