package mirror

import (
	"math/bits"
	"slices"
	"sort"
	"sync"

	"github.com/pmemgo/pmemgo/device"
)

// PageSize is the unit the Tracker tracks: 64 cache lines, so that one
// 64-bit word holds the dirty bits of a page.
const PageSize = 64 * device.LineSize

// Run is a range of pool bytes [Off, Off+Len).
type Run struct {
	Off, Len int
}

// Tracker records which cache lines of a set of tracked pages were written
// back. It subscribes to a device's write-back reports, so it works
// whichever device maps the pool. Its memory is one bit per line of the
// pages tracked, plus a list of the pages holding dirty lines.
//
// A Tracker is safe for concurrent use.
type Tracker struct {
	mu sync.Mutex
	// spans are the tracked pages, sorted, disjoint and not adjacent.
	spans []span
	// dirty lists, once each and unsorted, the pages with a dirty line.
	dirty []int
	lines int
	// last is the index in spans of the span the last write-back hit:
	// write-backs of one commit are near each other.
	last   int
	cancel func()
}

// span is a run of tracked pages and their dirty bits, one word a page.
type span struct {
	first int
	bits  []uint64
}

func (s *span) end() int { return s.first + len(s.bits) }

// NewTracker returns a Tracker fed by the write-backs of dev. It tracks no
// page until Track is called.
func NewTracker(dev device.Device) *Tracker {
	t := &Tracker{}
	t.cancel = dev.Subscribe(t)
	return t
}

// growingTracker is a Tracker that follows the pool's growth
// (device.GrowthFollower): it tracks the pages of the new part, then
// calls grown.
type growingTracker struct {
	*Tracker
	grown func(size int)
}

// newGrowingTracker returns a Tracker fed by the write-backs of dev that
// follows the pool's growth, tracking the new part and calling grown
// with the new size, on the growing goroutine, before the growth returns.
// A plain Tracker does not follow growth: the device refuses to grow
// while one is subscribed.
func newGrowingTracker(dev device.Device, grown func(size int)) *Tracker {
	t := &Tracker{}
	t.cancel = dev.Subscribe(growingTracker{t, grown})
	return t
}

// Grown implements device.GrowthFollower.
func (g growingTracker) Grown(size int) {
	g.Track(0, size)
	g.grown(size)
}

// Track starts tracking the pages that hold [off, off+n). Pages already
// tracked keep their dirty bits.
func (t *Tracker) Track(off, n int) {
	if n <= 0 || off < 0 {
		return
	}
	lo, hi := off/PageSize, (off+n+PageSize-1)/PageSize
	t.mu.Lock()
	defer t.mu.Unlock()
	// Merge the new pages with every span they overlap or touch.
	i := sort.Search(len(t.spans), func(i int) bool { return t.spans[i].end() >= lo })
	j := i
	for j < len(t.spans) && t.spans[j].first <= hi {
		lo, hi = min(lo, t.spans[j].first), max(hi, t.spans[j].end())
		j++
	}
	merged := span{first: lo, bits: make([]uint64, hi-lo)}
	for _, s := range t.spans[i:j] {
		copy(merged.bits[s.first-lo:], s.bits)
	}
	t.spans = slices.Replace(t.spans, i, j, merged)
	t.last = 0
}

// WriteBack records the lines of [off, off+n) that lie in tracked pages.
// It implements device.Subscriber.
func (t *Tracker) WriteBack(off, n int) {
	end := off + n
	t.mu.Lock()
	for off < end {
		s := t.spanFor(off / PageSize)
		if s == nil {
			off = t.nextTracked(off, end)
			continue
		}
		stop := min(end, s.end()*PageSize)
		for off < stop {
			page := off / PageSize
			pageEnd := min(stop, (page+1)*PageSize)
			first, last := (off%PageSize)/device.LineSize, ((pageEnd-1)%PageSize)/device.LineSize
			mask := (^uint64(0) >> (63 - last)) &^ (uint64(1)<<first - 1)
			w := &s.bits[page-s.first]
			if *w == 0 {
				t.dirty = append(t.dirty, page)
			}
			t.lines += bits.OnesCount64(mask &^ *w)
			*w |= mask
			off = pageEnd
		}
	}
	t.mu.Unlock()
}

// spanFor returns the span holding page, or nil.
func (t *Tracker) spanFor(page int) *span {
	if t.last < len(t.spans) {
		if s := &t.spans[t.last]; page >= s.first && page < s.end() {
			return s
		}
	}
	i := sort.Search(len(t.spans), func(i int) bool { return t.spans[i].end() > page })
	if i < len(t.spans) && t.spans[i].first <= page {
		t.last = i
		return &t.spans[i]
	}
	return nil
}

// nextTracked returns the start of the first tracked page after off, or end.
func (t *Tracker) nextTracked(off, end int) int {
	page := off / PageSize
	i := sort.Search(len(t.spans), func(i int) bool { return t.spans[i].first > page })
	if i == len(t.spans) {
		return end
	}
	return max(off, min(end, t.spans[i].first*PageSize))
}

// Fence implements device.Subscriber. Lines are recorded at write-back;
// durability is the business of whoever reads them.
func (t *Tracker) Fence() {}

// Dirty returns the dirty lines, sorted and coalesced into runs.
func (t *Tracker) Dirty() []Run {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.runs(nil)
}

// DirtyBytes returns the number of dirty bytes: 64 per dirty line.
func (t *Tracker) DirtyBytes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lines * device.LineSize
}

// Reset forgets every dirty line.
func (t *Tracker) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reset()
}

// Take appends the dirty runs to dst, as Dirty would return them, and
// resets the tracker, in one step: no write-back falls between the two.
func (t *Tracker) Take(dst []Run) []Run {
	t.mu.Lock()
	defer t.mu.Unlock()
	dst = t.runs(dst)
	t.reset()
	return dst
}

// Stop ends the subscription to the device's write-backs. The dirty lines
// recorded so far can still be read.
func (t *Tracker) Stop() {
	t.cancel()
}

func (t *Tracker) runs(dst []Run) []Run {
	slices.Sort(t.dirty)
	start := len(dst)
	for _, page := range t.dirty {
		s := t.spanFor(page)
		w := s.bits[page-s.first]
		base := page * PageSize
		for w != 0 {
			first := bits.TrailingZeros64(w)
			n := bits.TrailingZeros64(^(w >> first))
			if n == 64 {
				w = 0
			} else {
				w &^= (uint64(1)<<n - 1) << first
			}
			off := base + first*device.LineSize
			if k := len(dst) - 1; k >= start && dst[k].Off+dst[k].Len == off {
				dst[k].Len += n * device.LineSize
			} else {
				dst = append(dst, Run{Off: off, Len: n * device.LineSize})
			}
		}
	}
	return dst
}

func (t *Tracker) reset() {
	for _, page := range t.dirty {
		s := t.spanFor(page)
		s.bits[page-s.first] = 0
	}
	t.lines = 0
	if cap(t.dirty) > 4096 {
		t.dirty = nil
	} else {
		t.dirty = t.dirty[:0]
	}
}
