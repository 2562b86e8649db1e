package recovery

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// This file holds the readers that tools such as pmemctl use to look at a
// pool without changing it: Inspect describes the metadata as it lies in
// the file, OpenReadOnly recovers the pool in memory only, and Image is
// what the reachability walk and the object dumper read.

// Image is a recovered pool as tools read it: its mapped bytes and the
// metadata that interprets them.
type Image struct {
	// Mem is the mapping of the whole pool.
	Mem []byte
	// Base is the address every stored pointer is relative to.
	Base   uint64
	Header layout.Header
	State  layout.State
	// Types are the stored type descriptors; type id i is Types[i-1].
	Types []layout.TypeDesc
}

// Image returns the pool's bytes and metadata, for tools. The bytes are
// the pool's mapping: valid until Close.
func (p *Pool) Image() *Image {
	return &Image{Mem: p.Dev.Bytes(), Base: uint64(p.Base()), Header: p.Header, State: p.State, Types: p.Types}
}

// PoolFile is a pool opened by OpenReadOnly.
type PoolFile struct {
	*Pool
	f *os.File
}

// OpenReadOnly is for tools. It opens the pool file at path for reading,
// under a shared lock that it fails at once to take when a writer holds
// the pool, and recovers it as Open does (a live undo log rolled back, an
// interrupted swizzle finished) in a private mapping: the file is never
// written. Every slab header is validated: tools do not trust the slab
// summary (see Options.FullValidation). Close the result to unmap the pool and release the lock.
func OpenReadOnly(path string) (*PoolFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := Lock(f, false, -1); err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	p, err := Open(f, Options{Mapper: device.Private{}, ReadOnly: true, FullValidation: true})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &PoolFile{Pool: p, f: f}, nil
}

// Close unmaps the pool, dropping what recovery changed in memory, and
// closes the file.
func (p *PoolFile) Close() error { return errors.Join(p.Pool.Close(), p.f.Close()) }

// SlotInfo is one header slot as Inspect decoded it.
type SlotInfo struct {
	Header layout.Header
	// Err says why the slot does not decode; nil when it does.
	Err error
}

// LogInfo describes the undo log as Inspect found it.
type LogInfo struct {
	// Gen is the log's generation.
	Gen uint64
	// Entries is the number of entries of the live transaction: zero when
	// the log is retired.
	Entries int
	// Commit is set when the live transaction wrote its commit record, and
	// Holds when Open keeps the transaction instead of rolling it back: the
	// record is complete (a redo record, whose content Open copies back in
	// place) or every range it lists holds the content it was committed
	// with (an older pool's hash record).
	Commit, Holds bool
	// Prev is set when the generation before holds a complete redo
	// record, which Open copies back in place first: on a device that
	// buffers stores, the only durable copy of what that commit wrote
	// until the next fence (see layout.ScanPrev).
	Prev bool
	// Err says why the log cannot be read.
	Err error
}

// Info is a pool file's metadata as it lies in the file, neither
// recovered nor changed: what pmemctl info shows. A region that fails to
// decode has its error set and leaves the regions that depend on it
// zero.
type Info struct {
	// FileSize is the size of the file, which should be Header.Size.
	FileSize int64
	// Slots are the two header slots. Current is the one the pool is read
	// by, as ReadHeader chooses it (the valid slot with the higher
	// sequence number), or -1 when neither decodes; Header is its header.
	Slots   [2]SlotInfo
	Current int
	Header  layout.Header
	// OpenMark is set when the pool was not closed cleanly.
	OpenMark bool
	State    layout.State
	StateErr error
	Types    []layout.TypeDesc
	TypesErr error
	Log      LogInfo
	// Slabs counts the slab headers below the high-water mark that decode,
	// their checksums holding; SlabErrs holds an error for each that does
	// not.
	Slabs    int
	SlabErrs []error
	Summary  SummaryInfo
}

// SummaryInfo describes the slab summary.
type SummaryInfo struct {
	// Present is set when the region holds a summary, usable or not.
	Present bool
	// Entries is the number of slabs it describes, when it decodes.
	Entries int
	// Stale says why an intact summary describes an older state of the
	// pool (Open does not use it), Err why it fails its checks; both nil
	// when the next open at the pool's base will use it.
	Stale, Err error
}

// Inspect reads the metadata of the pool file at path without writing it,
// under a shared lock that it fails at once to take when a writer holds
// the pool. It returns an error only when the file cannot be read, holds
// no pool header (pmemgo.ErrNotPool) or has a format version this build
// does not read (pmemgo.ErrVersion); damage is described in the Info.
func Inspect(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := Lock(f, false, -1); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	info := &Info{FileSize: fi.Size(), Current: -1}
	if err := info.readSlots(f); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	if info.Current < 0 {
		return info, nil
	}
	var mark [8]byte
	if n, _ := f.ReadAt(mark[:], layout.OpenMarkOff); n == len(mark) {
		info.OpenMark = layout.OpenMark(mark[:]) != 0
	}
	size := min(uint64(info.FileSize), info.Header.Size)
	if size < layout.StateOff+layout.StateSize {
		info.StateErr = fmt.Errorf("the file ends at %d, before the heap state: %w", size, pmemgo.ErrTruncated)
		return info, nil
	}
	dev, err := device.Private{}.Map(f, int(size), device.MapRequest{})
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer dev.Close()
	info.readRegions(dev.Bytes())
	return info, nil
}

// readSlots decodes both header slots and chooses the current one.
func (info *Info) readSlots(f *os.File) error {
	var buf [layout.HeaderBytes]byte
	magic := false
	for i := range info.Slots {
		n, err := f.ReadAt(buf[:], layout.SlotOff(i))
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read header slot %c: %w", 'A'+i, err)
		}
		magic = magic || n >= len(layout.Magic) && string(buf[:len(layout.Magic)]) == layout.Magic
		s := &info.Slots[i]
		s.Header, s.Err = layout.DecodeHeader(buf[:n])
		if errors.Is(s.Err, pmemgo.ErrVersion) {
			return fmt.Errorf("header slot %c: %w", 'A'+i, s.Err)
		}
	}
	if !magic {
		return fmt.Errorf("file of %d bytes has no pool header: %w", info.FileSize, pmemgo.ErrNotPool)
	}
	a, b := info.Slots[0], info.Slots[1]
	switch {
	case a.Err == nil && (b.Err != nil || a.Header.Seq >= b.Header.Seq):
		info.Current = 0
	case b.Err == nil:
		info.Current = 1
	}
	if info.Current >= 0 {
		info.Header = info.Slots[info.Current].Header
	}
	return nil
}

// readRegions decodes what the current header describes, as far as the
// file holds it.
func (info *Info) readRegions(mem []byte) {
	h := &info.Header
	end := uint64(len(mem))
	cut := func(what string, off, n uint64) error {
		return fmt.Errorf("%s [%d, +%d) runs past the end of the file at %d: %w", what, off, n, end, pmemgo.ErrTruncated)
	}
	if info.State, info.StateErr = layout.DecodeState(mem[layout.StateOff:], h); info.StateErr == nil {
		if h.TypeOff+info.State.TypeBytes > end {
			info.TypesErr = cut("type table", h.TypeOff, info.State.TypeBytes)
		} else {
			info.Types, info.TypesErr = layout.DecodeTypeTable(mem[h.TypeOff:h.TypeOff+info.State.TypeBytes], info.State.Types, h.TypeOff)
		}
	}
	if h.LogOff+h.LogSize > end {
		info.Log.Err = cut("undo log", h.LogOff, h.LogSize)
	} else {
		info.Log = readLog(mem, h, end)
	}
	if info.StateErr == nil && h.SumOff+h.SumSize <= end {
		info.Summary = readSummary(mem, h, &info.State, info.OpenMark)
	}
	if info.StateErr == nil && end > h.SlabOff {
		walk := *h
		walk.Slabs = min(h.Slabs, (end-h.SlabOff)/h.SlabSize)
		high := uint32(min(uint64(info.State.SlabHigh), walk.Slabs))
		layout.WalkSlabs(mem, &walk, high, func(_ uint32, _ *layout.SlabHeader, err error) bool {
			if err != nil {
				info.SlabErrs = append(info.SlabErrs, err)
			} else {
				info.Slabs++
			}
			return true
		})
	}
}

// readSummary decodes the slab summary and says whether Open could use it.
func readSummary(mem []byte, h *layout.Header, st *layout.State, open bool) SummaryInfo {
	si := SummaryInfo{Present: layout.SummaryPresent(mem[h.SumOff : h.SumOff+h.SumSize])}
	if !si.Present {
		return si
	}
	if sum, err := layout.DecodeSummary(mem[h.SumOff:h.SumOff+h.SumSize], h); err == nil {
		si.Entries = len(sum.Slabs)
	}
	_, err := boundSummary(mem, h, st, open)
	if errors.Is(err, errStale) {
		si.Stale = err
	} else {
		si.Err = err
	}
	return si
}

// readLog scans the undo log of a pool whose file ends at end.
func readLog(mem []byte, h *layout.Header, end uint64) LogInfo {
	var li LogInfo
	log := mem[h.LogOff : h.LogOff+h.LogSize]
	if li.Gen, li.Err = layout.LogGen(log); li.Err != nil {
		return li
	}
	entries, commit, err := layout.ScanLog(log, layout.StateOff, min(h.Size, end))
	if err != nil {
		li.Err = err
		return li
	}
	li.Entries = len(entries)
	prev, err := layout.ScanPrev(log, layout.StateOff, min(h.Size, end))
	if err != nil {
		li.Err = err
		return li
	}
	li.Prev = prev != nil
	if commit != nil {
		li.Commit = true
		li.Holds = commit.Keeps(len(entries), mem)
	}
	return li
}
