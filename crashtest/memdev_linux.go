package crashtest

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

// regions is how many mappings a memMapper keeps: the pool must land
// away from the bases its image records, so one of them may be unusable
// for a given image.
const regions = 3

// verifyEvery is how often, in opens, a region is compared whole with the
// image after it was restored, to catch stores nobody flushed.
const verifyEvery = 16

// memMapper maps crash images for checking without a mapping, a page
// fault or a copy of the pool per image. It keeps a few anonymous
// regions, each holding the scratch image as it was when the region was
// last used. Opening a pool on a region first copies the lines the
// scratch changed since, and closing it copies back, from the scratch,
// the lines the pool flushed: recovery, the swizzle, Close and committed
// transactions flush every line they write. A store nobody flushed (the
// workload's Recover or Check writing outside a transaction) is caught by
// comparing the region whole with the image now and then, and from then
// on every open copies the whole image.
type memMapper struct {
	s       *scratch
	regions [regions]region
	opens   int
	// strays are the places where a store that was not flushed was
	// found; after the first, every open copies the whole image.
	strays []string
}

// region is one mapping of a memMapper. stale lists the lines that may
// differ from the scratch image, marked in a bitmap so each is listed
// once; all means every line may.
type region struct {
	mem   []byte
	busy  bool
	all   bool
	stale []int
	mark  []uint64
}

func newMemMapper(s *scratch) (*memMapper, error) {
	m := &memMapper{s: s}
	lines := len(s.img) / device.LineSize
	for i := range m.regions {
		b, err := unix.Mmap(-1, 0, len(s.img), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			m.close()
			return nil, fmt.Errorf("map image region: %w", err)
		}
		m.regions[i] = region{mem: b, all: true, mark: make([]uint64, (lines+63)/64)}
	}
	s.changed = m.changed
	return m, nil
}

func (m *memMapper) close() {
	m.s.changed = nil
	for i := range m.regions {
		if b := m.regions[i].mem; b != nil {
			_ = unix.Munmap(b)
			m.regions[i].mem = nil
		}
	}
}

// changed is told of every line of the scratch image written, or of all
// of them when line is -1.
func (m *memMapper) changed(line int) {
	for i := range m.regions {
		m.regions[i].stale1(line)
	}
}

func (r *region) stale1(line int) {
	switch {
	case r.all:
	case line < 0:
		r.all = true
	case r.mark[line/64]&(1<<(line%64)) == 0:
		r.mark[line/64] |= 1 << (line % 64)
		r.stale = append(r.stale, line)
	}
}

// sync makes the region hold the scratch image.
func (r *region) sync(img []byte) {
	if r.all {
		copy(r.mem, img)
	} else {
		for _, l := range r.stale {
			off := l * device.LineSize
			copy(r.mem[off:off+device.LineSize], img[off:])
		}
	}
	r.all, r.stale = false, r.stale[:0]
	clear(r.mark)
}

// Map returns a free region that overlaps no range of req.Avoid, holding
// the scratch image, or a private mapping of f when none is free. f is
// the file the heap opened by the scratch's path: the same memfd.
func (m *memMapper) Map(f *os.File, size int, req device.MapRequest) (device.Device, error) {
	for i := range m.regions {
		r := &m.regions[i]
		rg := device.Range{Start: uintptr(unsafe.Pointer(unsafe.SliceData(r.mem))), Len: uintptr(len(r.mem))}
		if r.busy || size != len(r.mem) || slices.ContainsFunc(req.Avoid, rg.Overlaps) {
			continue
		}
		if len(m.strays) > 0 {
			r.all = true
		}
		r.sync(m.s.img)
		r.busy = true
		return &memDevice{m: m, r: r}, nil
	}
	req.Hint = 0
	return device.Private{}.Map(f, size, req)
}

// release takes back a region after its pool was closed: the lines the
// pool flushed are stale, and now and then the whole region is compared
// with the image, for stores that were not flushed.
func (m *memMapper) release(r *region, flushed []int) {
	r.busy = false
	for _, l := range flushed {
		r.stale1(l)
	}
	m.opens++
	if m.opens%verifyEvery != 0 || len(m.strays) > 0 {
		return
	}
	r.sync(m.s.img)
	if bytes.Equal(r.mem, m.s.img) {
		return
	}
	for off := 0; off < len(r.mem); off += device.LineSize {
		if !bytes.Equal(r.mem[off:off+device.LineSize], m.s.img[off:off+device.LineSize]) {
			m.strays = append(m.strays, locate(r.mem, off, m.s.img))
			break
		}
	}
	r.all = true
}

// memDevice is a pool opened on a region of a memMapper. Like
// device.Private, it makes nothing durable.
type memDevice struct {
	m       *memMapper
	r       *region
	closed  bool
	flushed []int
	subs    []*device.Subscriber
}

func (d *memDevice) Bytes() []byte { return d.r.mem }

func (d *memDevice) Flush(off, n int) {
	if d.closed || n <= 0 {
		return
	}
	lo := max(off, 0) &^ (device.LineSize - 1)
	hi := min(off+n, len(d.r.mem))
	for l := lo / device.LineSize; l*device.LineSize < hi; l++ {
		d.flushed = append(d.flushed, l)
	}
	if hi > lo {
		for _, s := range d.subs {
			if s != nil {
				(*s).WriteBack(lo, (hi-lo+device.LineSize-1)&^(device.LineSize-1))
			}
		}
	}
}

func (d *memDevice) Fence() error {
	if d.closed {
		return device.ErrClosed
	}
	for _, s := range d.subs {
		if s != nil {
			(*s).Fence()
		}
	}
	return nil
}

func (d *memDevice) Subscribe(s device.Subscriber) (cancel func()) {
	p := &s
	d.subs = append(d.subs, p)
	return func() {
		if i := slices.Index(d.subs, p); i >= 0 {
			d.subs[i] = nil
		}
	}
}

// Close hands the region back to the mapper.
func (d *memDevice) Close() error {
	if d.closed {
		return device.ErrClosed
	}
	d.closed = true
	d.m.release(d.r, d.flushed)
	return nil
}
