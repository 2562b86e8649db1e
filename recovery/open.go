// Package recovery brings a pool file to a usable state and checks pools
// offline.
//
// Open validates every piece of metadata, rolls back a live undo log and,
// when the pool lands at a new base, swizzles its pointers. It writes
// nothing before the header and the undo log entries have been validated,
// and nothing but that rollback before every pointer it reads (all of
// them when it relocates or follows a crash) has passed the checker's
// rules. Check walks a pool without changing it and
// reports every problem it finds.
package recovery

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/swizzle"
)

// Options controls Open.
type Options struct {
	// Mapper chooses the device. Nil means device.Msync.
	Mapper device.Mapper
	// ReadOnly recovers in memory only: the file is never written. The
	// mapper should then be a private one (device.Private).
	ReadOnly bool
	// ForceRelocate maps the pool away from its previous base, so that
	// every open swizzles. Tests use it.
	ForceRelocate bool
	// Workers is the number of goroutines swizzling; 0 means GOMAXPROCS.
	Workers int
	// FullValidation validates every slab header at open even when the
	// pool was closed cleanly and its slab summary could be used.
	FullValidation bool
	// VerifyPointers applies the checker's pointer rules to every stored
	// pointer at any open, as an open that relocates the pool or follows
	// a crash always does. It implies FullValidation.
	VerifyPointers bool
	// MaxSize is the size the pool may grow to in this open (see Grow):
	// the open reserves that much address space, and it is recorded in
	// the header at the next header write. Zero takes the header's
	// MaxSize, or DefaultMaxSize when the header records none (a pool
	// made before pools could grow). A read-only open reserves nothing.
	MaxSize, DefaultMaxSize uint64
}

// Report says what Open did to bring the pool up.
type Report struct {
	// RolledBack is the number of undo-log entries rolled back.
	RolledBack int
	// Relocated is true when the pool was mapped at a new base.
	Relocated bool
	// Resumed is true when an interrupted swizzle was carried on.
	Resumed bool
	// OldBase and NewBase are the bases before and after.
	OldBase, NewBase uint64
	// Swizzle is what the rewrite did; Validate is the time the read-only
	// pass that checks every pointer against the checker's rules took,
	// zero when Open read no pointer.
	Swizzle  swizzle.Stats
	Validate time.Duration
	// FromSummary is true when the slabs were read from the slab summary
	// of a clean close rather than from every slab's header: each slab's
	// header is then validated when it is first used (see LoadSlab).
	FromSummary bool
	// SummaryIgnored says why a summary that was present could not be
	// used: it was stale or failed its checks. Nil when none was present
	// or it was used.
	SummaryIgnored error
}

// Pool is a validated, recovered and mapped pool.
type Pool struct {
	Dev    device.Device
	Header layout.Header
	State  layout.State
	// Types are the stored type descriptors; type id i is Types[i-1].
	Types []layout.TypeDesc
	// Slabs maps the initialised slabs.
	Slabs  *SlabMap
	Report Report
	ro     bool
	// marked is set while the open mark is set on the media: by this
	// session's first write, or by a session that did not close.
	marked bool
}

// Base returns the address the pool is mapped at.
func (p *Pool) Base() uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(p.Dev.Bytes()))) }

// Open validates, maps and recovers the pool in f. On error nothing is
// mapped and, unless the error came from rolling back a validated undo log,
// nothing was written.
func Open(f *os.File, opts Options) (*Pool, error) {
	mapper := opts.Mapper
	if mapper == nil {
		mapper = device.Msync{}
	}
	hdr, err := ReadHeaderVia(f, mapper)
	if err != nil {
		return nil, err
	}
	if hdr.MaxSize == 0 {
		hdr.MaxSize = max(opts.DefaultMaxSize, hdr.Size)
	}
	if opts.MaxSize != 0 {
		if opts.MaxSize < hdr.Size {
			return nil, fmt.Errorf("maximum size %d is below the pool's size %d: %w", opts.MaxSize, hdr.Size, pmemgo.ErrInvalidOptions)
		}
		hdr.MaxSize = opts.MaxSize
	}
	req := mapRequest(&hdr, opts.ForceRelocate)
	if !opts.ReadOnly {
		req.Reserve = int(min(hdr.MaxSize, maxReserve))
	}
	dev, err := mapper.Map(f, int(hdr.Size), req)
	if err != nil {
		return nil, fmt.Errorf("map pool: %w", err)
	}
	p := &Pool{Dev: dev, Header: hdr, ro: opts.ReadOnly}
	p.marked = layout.OpenMark(dev.Bytes()[layout.OpenMarkOff:]) != 0
	if err := p.recover(opts); err != nil {
		dev.Close()
		return nil, err
	}
	return p, nil
}

// mapRequest asks for the base the pool's pointers are relative to, and
// keeps the mapping clear of every range a stored pointer may be in.
func mapRequest(h *layout.Header, force bool) device.MapRequest {
	var req device.MapRequest
	bases := []uint64{h.Base}
	if h.Flags&layout.FlagSwizzling != 0 {
		bases = append([]uint64{h.Target}, h.Old...)
	}
	for _, b := range bases {
		req.Avoid = append(req.Avoid, device.Range{Start: uintptr(b), Len: uintptr(h.Size)})
	}
	if !force {
		req.Hint = uintptr(bases[0])
	}
	return req
}

func (p *Pool) recover(opts Options) error {
	mem := p.Dev.Bytes()
	h := &p.Header
	// Roll back first: the logged bytes hold pointers relative to the
	// pool's current base, and the metadata they restore may be torn until
	// they do.
	n, err := Rollback(p.Dev, h)
	if err != nil {
		return err
	}
	p.Report.RolledBack = n
	if p.State, err = layout.DecodeState(mem[layout.StateOff:], h); err != nil {
		return err
	}
	if p.Types, err = layout.DecodeTypeTable(mem[h.TypeOff:h.TypeOff+p.State.TypeBytes], p.State.Types, h.TypeOff); err != nil {
		return err
	}
	if h.Flags&layout.FlagSwizzling == 0 && uint64(p.Base()) == h.Base && !opts.FullValidation && !opts.VerifyPointers {
		p.Slabs, p.Report.SummaryIgnored = p.fromSummary()
		p.Report.FromSummary = p.Slabs != nil
	}
	if p.Slabs == nil {
		// Populating the whole range, slot areas included, costs less
		// than the page faults of reading the slab headers alone, one per
		// slab, even when the slot areas are then read from the file
		// (measured in a nested virtual machine: 35 ms for 1 GiB, and
		// 100 ms to read its 16k headers then, against 280-410 ms).
		prefault(p.slabBytes(), workers(opts), false)
		touchHeaders(mem, h, p.State.SlabHigh, workers(opts))
		if p.Slabs, err = ValidateSlabs(mem, h, p.State.SlabHigh, p.Types); err != nil {
			return err
		}
	}
	if err := validateRoot(mem, p.Slabs, &p.State); err != nil {
		return err
	}
	return p.relocate(opts)
}

// relocate swizzles when the mapping is not at the base the pointers are
// relative to, recording the start and the end in the header. Every
// pointer is checked against the checker's rules first, in the same walk
// that checks it can be relocated; at the same base, they are checked
// only after a crash (the open mark was set) or when opts ask for it.
func (p *Pool) relocate(opts Options) error {
	h := p.Header
	addr := uint64(p.Base())
	p.Report.OldBase, p.Report.NewBase = h.Base, addr
	switch {
	case h.Flags&layout.FlagSwizzling != 0 && addr == h.Target:
		p.Report.Resumed = true
	case h.Flags&layout.FlagSwizzling != 0:
		if len(h.Old) == layout.MaxRelocations {
			return fmt.Errorf("pool was relocated %d times in a row without a swizzle completing: %w", len(h.Old), pmemgo.ErrCorrupt)
		}
		h.Old = append(h.Old, h.Target)
		h.Target = addr
		h.SwizzleGen++
		p.Report.Resumed = true
	case addr != h.Base:
		h.Flags |= layout.FlagSwizzling
		h.Old = []uint64{h.Base}
		h.Target = addr
		h.SwizzleGen++
	default:
		// Nothing to write: the open mark is set by the first write.
		// After a crash the pool is what recovery made of it, so its
		// pointers are checked as at a relocation; a pool closed cleanly
		// is trusted, so that reopening it walks no pointer.
		if !p.marked && !opts.VerifyPointers {
			return nil
		}
		t0 := time.Now()
		err := p.verifyPointers(nil, 0, opts.Workers)
		p.Report.Validate = time.Since(t0)
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("relocating to %#x: %w: %w", addr, err, pmemgo.ErrCorrupt)
	}
	p.Report.Relocated = true
	plan := swizzle.Plan{
		Dev: p.Dev, Header: &h, Types: p.Types, SlabHigh: p.State.SlabHigh,
		Table: swizzle.Table{
			Old: h.Old, Target: h.Target, Size: h.Size,
			Resuming: p.Header.Flags&layout.FlagSwizzling != 0 && p.Header.Target == addr,
		},
		Gen:     h.SwizzleGen,
		Workers: opts.Workers,
	}
	t0 := time.Now()
	if err := p.verifyPointers(&plan.Table, plan.Gen, opts.Workers); err != nil {
		return err
	}
	p.Report.Validate = time.Since(t0)
	// Every pointer is valid: the pages the rewrite stores to may now be
	// made writable in bulk, which on a shared mapping dirties them.
	if _, copies := p.Dev.(device.FileAccess); !copies && !p.ro {
		prefault(p.slabBytes(), workers(opts), true)
	}
	if err := p.MarkOpen(); err != nil {
		return err
	}
	if err := p.WriteHeader(h); err != nil {
		return err
	}
	st, err := plan.Run()
	p.Report.Swizzle = st
	if err != nil {
		return err
	}
	h = p.Header
	h.Flags &^= layout.FlagSwizzling
	h.Base, h.Target, h.Old = h.Target, 0, nil
	return p.WriteHeader(h)
}

// slabBytes returns the mapping of the slabs below the high-water mark.
func (p *Pool) slabBytes() []byte {
	h := &p.Header
	return p.Dev.Bytes()[h.SlabOff : h.SlabOff+uint64(p.State.SlabHigh)*h.SlabSize]
}

// workers returns the number of goroutines opts asks for.
func workers(opts Options) int {
	if opts.Workers > 0 {
		return opts.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// MarkOpen sets the open mark, if it is not set yet, before the first
// write of this open: a header slot torn by a crash from then on is
// recovered from rather than taken for corruption, and the slab summary
// of the last clean close is no longer trusted. Every write to the pool
// comes after it; an open that writes nothing leaves the file as it was.
func (p *Pool) MarkOpen() error {
	if p.ro || p.marked {
		return nil
	}
	if err := p.setOpenMark(1); err != nil {
		return err
	}
	p.marked = true
	return nil
}

func (p *Pool) setOpenMark(v uint64) error {
	layout.SetOpenMark(p.Dev.Bytes()[layout.OpenMarkOff:], v)
	p.Dev.Flush(layout.OpenMarkOff, 8)
	if err := p.Dev.Fence(); err != nil {
		return fmt.Errorf("open mark: %w", err)
	}
	return nil
}

// WriteHeader makes h the pool's header: it is written, with the next
// sequence number, to the slot not holding the current header, and fenced.
func (p *Pool) WriteHeader(h layout.Header) error {
	if err := p.MarkOpen(); err != nil {
		return err
	}
	h.Seq = p.Header.Seq + 1
	off := int(layout.SlotOff(int(h.Seq % 2)))
	h.Encode(p.Dev.Bytes()[off:])
	p.Dev.Flush(off, layout.HeaderBytes)
	if err := p.Dev.Fence(); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	p.Header = h
	return nil
}

// Close is CloseSummary without a summary: a summary of an earlier clean
// close is invalidated rather than left to describe slabs that may have
// changed.
func (p *Pool) Close() error { return p.CloseSummary(nil) }

// CloseSummary closes the pool. When this open wrote to it, the last
// transaction's log is retired, the header is written to both slots (so
// that either one failing validation later is known to be corruption),
// sum, which must describe every slab below the high-water mark, is
// written as the slab summary bound to that state, and the open mark is
// cleared last; then the pool is unmapped. A pool this open did not write
// to, and a read-only one, are only unmapped.
func (p *Pool) CloseSummary(sum *layout.Summary) error {
	var err error
	if !p.ro && p.marked {
		// The last transaction's log is retired here, off its commit path.
		_, err = Rollback(p.Dev, &p.Header)
		h := p.Header
		err = errors.Join(err, p.WriteHeader(h), p.WriteHeader(h))
		if err == nil {
			err = p.writeSummary(sum)
		}
		if err == nil {
			err = p.setOpenMark(0)
		}
	}
	return errors.Join(err, p.Dev.Close())
}

// Rollback brings the undo log to rest: a transaction with a complete
// commit record is kept (a redo record's content is copied back in place;
// an older pool's hash record must show the ranges reached the media
// whole), any other live transaction is undone; then the log is retired. It returns the number of entries rolled
// back. A crash in the middle leaves the log live, so doing it again is
// safe.
func Rollback(dev device.Device, h *layout.Header) (int, error) {
	mem := dev.Bytes()
	log := mem[h.LogOff : h.LogOff+h.LogSize]
	entries, commit, err := layout.ScanLog(log, layout.StateOff, h.Size)
	if err != nil {
		return 0, err
	}
	prev, err := layout.ScanPrev(log, layout.StateOff, h.Size)
	if err != nil {
		return 0, err
	}
	inLog := func(off, n uint64) bool { return off < h.LogOff+h.LogSize && h.LogOff < off+n }
	for _, e := range entries {
		if inLog(e.Off, uint64(len(e.Old))) {
			return 0, fmt.Errorf("undo log: entry for [%d, +%d) overlaps the log itself: %w", e.Off, len(e.Old), pmemgo.ErrCorrupt)
		}
	}
	for _, c := range []*layout.Commit{prev, commit} {
		for _, r := range c.RangesOrNil() {
			if inLog(r.Off, r.Len) {
				return 0, fmt.Errorf("undo log: commit record lists [%d, +%d), which overlaps the log itself: %w", r.Off, r.Len, pmemgo.ErrCorrupt)
			}
		}
	}
	// The previous generation's record goes back first, made durable
	// before anything retires it: its transaction committed before the
	// current one began, and what the current one logged was read after
	// it. A live record is retired even when its ranges hold its content
	// (a pool closed by an older build), so that no later recovery copies
	// it over what a swizzle or later transactions wrote.
	if prev != nil {
		// The fence is needed even when the ranges hold the content: on
		// a device that buffers stores, their write-back may be flushed
		// and not yet fenced.
		if !prev.Holds(mem) {
			for _, r := range prev.Apply(mem) {
				dev.Flush(int(r.Off), int(r.Len))
			}
		}
		if err := dev.Fence(); err != nil {
			return 0, fmt.Errorf("redo previous committed transaction: %w", err)
		}
	}
	if commit != nil && commit.Keeps(len(entries), mem) {
		return 0, redo(dev, h, commit)
	}
	if len(entries) == 0 {
		if commit != nil || prev != nil {
			return 0, RetireLog(dev, h)
		}
		return 0, nil
	}
	// Newest first, so that a range logged twice ends with its oldest bytes.
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		copy(mem[e.Off:], e.Old)
		dev.Flush(int(e.Off), len(e.Old))
	}
	if err := dev.Fence(); err != nil {
		return 0, fmt.Errorf("roll back: %w", err)
	}
	return len(entries), RetireLog(dev, h)
}

// redo keeps a committed transaction: the content its record carries is
// copied back in place (stores made after the commit, or in-place writes a
// crash tore, are overwritten by what the transaction committed), made
// durable, and the log retired.
func redo(dev device.Device, h *layout.Header, c *layout.Commit) error {
	applied := c.Apply(dev.Bytes())
	for _, r := range applied {
		dev.Flush(int(r.Off), int(r.Len))
	}
	if len(applied) > 0 {
		if err := dev.Fence(); err != nil {
			return fmt.Errorf("redo committed transaction: %w", err)
		}
	}
	return RetireLog(dev, h)
}

// RetireLog ends the log with one 8-byte store of a generation past both
// halves' (layout.RetireGen), and fences.
func RetireLog(dev device.Device, h *layout.Header) error {
	log := dev.Bytes()[h.LogOff : h.LogOff+h.LogSize]
	gen, err := layout.LogGen(log)
	if err != nil {
		return err
	}
	layout.SetLogGen(log, layout.RetireGen(gen))
	dev.Flush(int(h.LogOff)+layout.LogGenOff, 8)
	if err := dev.Fence(); err != nil {
		return fmt.Errorf("retire undo log: %w", err)
	}
	return nil
}
