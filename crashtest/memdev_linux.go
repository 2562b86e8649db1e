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

func newMemMapper(s *scratch) *memMapper {
	m := &memMapper{s: s}
	s.changed = m.changed
	return m
}

// mapRegion makes the mapping of region r the first time it is used.
func (m *memMapper) mapRegion(r *region) error {
	if r.mem != nil {
		return nil
	}
	// Populated at once: the first open copies the whole image in, and
	// one call is cheaper than a fault per page.
	b, err := unix.Mmap(-1, 0, len(m.s.img), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("map image region: %w", err)
	}
	*r = region{mem: b, all: true, mark: make([]uint64, (len(b)/device.LineSize+63)/64)}
	return nil
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
	case r.all || r.mem == nil:
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
// the scratch image, or a new private mapping of f when none is. f is the
// file the checker or the heap opened by the scratch's path: the same
// memfd.
func (m *memMapper) Map(f *os.File, size int, req device.MapRequest) (device.Device, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if err := m.mapRegion(r); err != nil {
			return nil, err
		}
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
	return m.mapNew(f, size, req.Avoid)
}

// mapNew maps f privately where the kernel likes, which must overlap no
// range of avoid, for an image no region can take.
func (m *memMapper) mapNew(f *os.File, size int, avoid []device.Range) (device.Device, error) {
	var rejected [][]byte
	defer func() {
		for _, b := range rejected {
			_ = unix.Munmap(b)
		}
	}()
	for range 8 {
		b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err != nil {
			return nil, fmt.Errorf("map image: %w", err)
		}
		rg := device.Range{Start: uintptr(unsafe.Pointer(unsafe.SliceData(b))), Len: uintptr(len(b))}
		if !slices.ContainsFunc(avoid, rg.Overlaps) {
			return &memDevice{m: m, r: &region{mem: b}, own: true}, nil
		}
		rejected = append(rejected, b)
	}
	return nil, fmt.Errorf("map image: %w", device.ErrNoAddress)
}

// release takes back a region after its pool was closed: the ranges the
// pool flushed are copied back from the image, which did not change
// meanwhile, and now and then the whole region is compared with the
// image, for stores that were not flushed.
func (m *memMapper) release(r *region, flushed []span) {
	r.busy = false
	for _, sp := range flushed {
		copy(r.mem[sp.lo:sp.hi], m.s.img[sp.lo:sp.hi])
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

// span is a byte range [lo, hi) of a region.
type span struct{ lo, hi int }

// memDevice is a pool opened on a region of a memMapper. Like
// device.Private, it makes nothing durable.
type memDevice struct {
	m *memMapper
	r *region
	// own is set for a mapping of its own, unmapped by Close.
	own     bool
	closed  bool
	flushed []span
	subs    []*device.Subscriber
}

func (d *memDevice) Bytes() []byte { return d.r.mem }

func (d *memDevice) Flush(off, n int) {
	if d.closed || n <= 0 {
		return
	}
	lo := max(off, 0) &^ (device.LineSize - 1)
	hi := min((off+n+device.LineSize-1)&^(device.LineSize-1), len(d.r.mem))
	if hi <= lo {
		return
	}
	if k := len(d.flushed) - 1; k >= 0 && d.flushed[k].hi == lo {
		d.flushed[k].hi = hi
	} else {
		d.flushed = append(d.flushed, span{lo, hi})
	}
	for _, s := range d.subs {
		if s != nil {
			(*s).WriteBack(lo, hi-lo)
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
	if d.own {
		return unix.Munmap(d.r.mem)
	}
	d.m.release(d.r, d.flushed)
	d.flushed = nil
	return nil
}
