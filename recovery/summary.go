package recovery

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// errStale says that a summary is intact but describes an earlier state of
// the pool; it is not a problem, only a reason not to use it.
var errStale = errors.New("slab summary is stale")

// boundSummary decodes the slab summary in mem and checks that it
// describes the pool's current state: the pool was closed cleanly (the
// open mark is clear) and the undo log generation, header sequence and
// slab high-water mark are those the summary was written for. It returns
// (nil, nil) when the pool has no summary, and an error wrapping errStale
// or pmemgo.ErrCorrupt when it has one that cannot be used.
func boundSummary(mem []byte, h *layout.Header, s *layout.State, open bool) (*layout.Summary, error) {
	region, err := summaryRegion(mem, h, open)
	if region == nil {
		return nil, err
	}
	sum, err := layout.DecodeSummary(region, h)
	if errors.Is(err, layout.ErrOldSummary) {
		return nil, fmt.Errorf("%w: %w", errStale, err)
	}
	if err != nil {
		return nil, err
	}
	head := layout.SummaryHead{Count: uint64(len(sum.Slabs)), LogGen: sum.LogGen, HeaderSeq: sum.HeaderSeq}
	if err := checkBinding(head, mem, h, s); err != nil {
		return nil, err
	}
	return &sum, nil
}

// summaryRegion returns the summary region in mem, or nil and why not
// when there is no summary to look at.
func summaryRegion(mem []byte, h *layout.Header, open bool) ([]byte, error) {
	region := mem[h.SumOff : h.SumOff+h.SumSize]
	switch {
	case !layout.SummaryPresent(region):
		return nil, nil
	case open:
		// A crash may have torn the summary a Close was writing: it is
		// not looked at.
		return nil, fmt.Errorf("%w: the pool was not closed cleanly", errStale)
	}
	return region, nil
}

// checkBinding returns an error wrapping errStale unless the summary whose
// header says head was written for the pool's current state.
func checkBinding(head layout.SummaryHead, mem []byte, h *layout.Header, s *layout.State) error {
	gen, err := layout.LogGen(mem[h.LogOff : h.LogOff+h.LogSize])
	if err != nil {
		return err
	}
	switch {
	case head.LogGen != gen || head.HeaderSeq != h.Seq:
		return fmt.Errorf("%w: written at log generation %d and header sequence %d, the pool is at %d and %d",
			errStale, head.LogGen, head.HeaderSeq, gen, h.Seq)
	case head.Count != uint64(s.SlabHigh):
		return fmt.Errorf("%w: it has %d slabs, the heap state %d", errStale, head.Count, s.SlabHigh)
	}
	return nil
}

// fromSummary builds the slab map from the slab summary of the last clean
// close, checking each entry against the type table. It returns (nil,
// why) when there is no usable summary; the caller then validates every
// slab header.
func (p *Pool) fromSummary() (*SlabMap, error) {
	h := &p.Header
	mem := p.Dev.Bytes()
	region, err := summaryRegion(mem, h, p.marked)
	if region == nil {
		return nil, err
	}
	head, err := layout.ReadSummaryHead(region, h)
	if err != nil {
		return nil, err
	}
	if err := checkBinding(head, mem, h, &p.State); err != nil {
		return nil, err
	}
	high := p.State.SlabHigh
	shapes, err := layout.SummaryShapes(region, h, head)
	if err != nil {
		return nil, err
	}
	// The entries go straight into the map, which takes the summary's
	// shapes as its own: no decoded copy of the whole summary is made.
	// Each shape is checked against the type table once, at its first
	// slab (whose index the error names), since the entries all lie below
	// the high-water mark (checkBinding) and WalkSummary keeps every
	// extent inside them.
	m := NewSlabMap(h, high, p.Types)
	m.setShapes(shapes)
	checked := make([]bool, len(shapes))
	var bad error
	err = layout.WalkSummary(region, h, head, shapes, func(i, shape, used uint32) {
		if bad != nil {
			return
		}
		if !checked[shape] {
			if err := SlabTypeProblem(h, i, &shapes[shape], high, p.Types); err != nil {
				bad = fmt.Errorf("slab summary entry %d: %w", i, err)
				return
			}
			checked[shape] = true
		}
		m.addShaped(i, shape, used)
	})
	if err = cmp.Or(bad, err); err != nil {
		return nil, err
	}
	// The root is read through its slab's bitmap: that one slab is
	// validated now.
	if p.State.RootOff != 0 {
		if idx, ok := h.SlabIndex(p.State.RootOff); ok && int(idx) < len(m.owner) && m.owner[idx] >= 0 {
			head := uint32(m.owner[idx])
			entry := m.head(head)
			if _, err := LoadSlab(mem, h, head, &entry); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// LoadSlab decodes the header of slab i and checks it against entry, what
// the slab summary says of it: a slab opened from the summary is validated
// this way before its bitmap is first read or anything in it written.
func LoadSlab(mem []byte, h *layout.Header, i uint32, entry *layout.SlabHeader) (layout.SlabHeader, error) {
	off := h.SlabOffset(i)
	sh, err := layout.DecodeSlabHeader(mem[off:], h.SlabOff+h.Slabs*h.SlabSize-off, h.SlabSize)
	if err == nil && !layout.SameSlab(&sh, entry) {
		err = fmt.Errorf("header says %s, the slab summary %s: %w", describeSlab(&sh), describeSlab(entry), pmemgo.ErrCorrupt)
	}
	if err != nil {
		return sh, &layout.SlabError{Slab: i, Offset: off, Err: err}
	}
	return sh, nil
}

// CheckFreeSlab checks, before a slab the summary lists as free is used,
// that its header says so too.
func CheckFreeSlab(mem []byte, h *layout.Header, i uint32) error {
	off := h.SlabOffset(i)
	if layout.SlabIsFree(mem[off:]) {
		return nil
	}
	return &layout.SlabError{Slab: i, Offset: off, Err: fmt.Errorf("the slab summary lists it as free but it has a header: %w", pmemgo.ErrCorrupt)}
}

// writeSummary writes sum, bound to the current log generation and
// header, as the slab summary and fences; a nil sum invalidates the
// summary instead.
func (p *Pool) writeSummary(sum *layout.Summary) error {
	h := &p.Header
	mem := p.Dev.Bytes()
	region := mem[h.SumOff : h.SumOff+h.SumSize]
	n := 8
	if sum == nil {
		layout.ClearSummary(region)
	} else {
		if uint64(len(sum.Slabs)) > h.Slabs {
			return fmt.Errorf("slab summary of %d slabs for a pool of %d", len(sum.Slabs), h.Slabs)
		}
		gen, err := layout.LogGen(mem[h.LogOff : h.LogOff+h.LogSize])
		if err != nil {
			return err
		}
		sum.LogGen, sum.HeaderSeq = gen, h.Seq
		if n, err = layout.EncodeSummary(region, sum); errors.Is(err, layout.ErrSummaryTooBig) {
			// The next open reads every slab header instead.
			layout.ClearSummary(region)
			n = 8
		} else if err != nil {
			return err
		}
	}
	p.Dev.Flush(int(h.SumOff), n)
	if err := p.Dev.Fence(); err != nil {
		return fmt.Errorf("slab summary: %w", err)
	}
	return nil
}

// summary checks the slab summary, when the pool has one: a summary that
// fails its checks is a problem even though Open would only ignore it,
// and one bound to the pool's current state must agree with every slab
// header, since Open would then trust it.
func (c *checker) summary() bool {
	h := &c.h
	if h.SumOff+h.SumSize > uint64(len(c.mem)) {
		return true
	}
	region := c.mem[h.SumOff : h.SumOff+h.SumSize]
	if !layout.SummaryPresent(region) {
		return true
	}
	sum, err := boundSummary(c.mem, h, &c.state, c.openMark())
	switch {
	case errors.Is(err, errStale):
		return true
	case err != nil:
		return c.report("summary", int64(h.SumOff), "slab summary", dropWhere(err, "slab summary"))
	}
	for i := range min(uint32(len(sum.Slabs)), c.high) {
		entry := &sum.Slabs[i]
		var got layout.SlabHeader
		switch o := c.owner[i]; {
		case o == slabBad:
			continue // reported with the slab
		case o >= 0 && c.heads[o].idx == i:
			got = c.heads[o].sh
		}
		if !layout.SameSlab(&got, entry) {
			off := int64(h.SumOff) + sum.EntryOffset(i)
			err := fmt.Errorf("says %s, the slab's header %s: %w", describeSlab(entry), describeSlab(&got), pmemgo.ErrCorrupt)
			if !c.report("summary", off, fmt.Sprintf("slab summary entry %d", i), err) {
				return false
			}
		}
	}
	return true
}

// describeSlab says briefly what a slab header or summary entry records.
func describeSlab(sh *layout.SlabHeader) string {
	if sh.Kind == layout.KindFree {
		return "free (or inside an extent)"
	}
	return fmt.Sprintf("kind %d type %d, %d of %d slots of %d bytes used, extent %d", sh.Kind, sh.Type, sh.Used, sh.Slots, sh.SlotSize, sh.Extent)
}
