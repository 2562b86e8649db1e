package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mbits "math/bits"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/fsx"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/swizzle"
)

// ErrNeedsRecovery is pmemgo.ErrNeedsRecovery, wrapped by the problems
// CheckFile reports for a pool that a crash left needing recovery.
var ErrNeedsRecovery = pmemgo.ErrNeedsRecovery

// Problem is one thing CheckFile found wrong with a pool.
type Problem struct {
	// Kind is a short stable code: "header", "size", "swizzle", "undo-log",
	// "state", "type-table", "slab", "bitmap", "root", "pointer-range",
	// "pointer-free", "pointer-type" or "pointer-bounds"; CheckLeaks adds
	// "leak".
	Kind string
	// Offset is the file offset the problem is at, -1 when it has none.
	Offset int64
	// Where names the place in pool terms: "header slot B", "slab 12",
	// "slab 12 object 5 (main.Node) field Next",
	// "slab 3 array 2 element 7 (main.Node) field Tags".
	Where string
	// Err describes what is wrong and wraps a sentinel: pmemgo.ErrCorrupt
	// or pmemgo.ErrTruncated for damage, ErrNeedsRecovery for what Open
	// repairs.
	Err error
}

// String returns "<where> at offset <n>: <err>", without the offset part
// when the problem has none.
func (p Problem) String() string {
	if p.Offset < 0 {
		return p.Where + ": " + p.Err.Error()
	}
	return p.Where + " at offset " + strconv.FormatInt(p.Offset, 10) + ": " + p.Err.Error()
}

// CheckStats says how much of a pool CheckFileStats got through.
type CheckStats struct {
	// Slabs is the number of slabs (extents) whose headers were usable.
	Slabs int
	// Objects is the number of allocated slots, objects or arrays, in them.
	Objects int64
	// Pointers is the number of non-nil pointer words checked.
	Pointers int64
	// RolledBack is the number of undo-log entries rolled back, in memory
	// only, before the heap was checked.
	RolledBack int
}

// CheckFile checks the pool file at path without writing it and calls
// yield for every problem found, in file order as far as possible, until
// yield returns false. It returns an error only when the file cannot be
// checked at all: it cannot be read, it is not a pool (pmemgo.ErrNotPool),
// or its format version is unknown (pmemgo.ErrVersion). Everything else is
// a Problem, and the check goes on as far as the damage allows.
//
// The pool is checked as Open would find it: a live undo log is rolled
// back first, in a private copy-on-write mapping, and reported. Problems
// come in this order: the header slots and the file size, a swizzle or a
// transaction that a crash interrupted, the heap state, the type table,
// the slab headers, the root, then the pointers of every allocated object
// in slab order.
func CheckFile(path string, yield func(Problem) bool) error {
	_, err := CheckFileStats(path, yield)
	return err
}

// CheckFileStats is CheckFile, and also returns how much was checked, for
// a summary line. The stats count what was checked before the check ended
// or yield stopped it.
func CheckFileStats(path string, yield func(Problem) bool) (CheckStats, error) {
	return CheckFileOptions(path, nil, yield)
}

// CheckOptions are the options of CheckFileOptions. A nil *CheckOptions
// is the zero value: a check that reports no progress.
type CheckOptions struct {
	// Progress, if not nil, is called from time to time, on the goroutine
	// running the check, with the number of slabs the check has gone
	// through and the number it goes through: the slabs below the pool's
	// high-water mark, free and damaged ones included. It is first called
	// with done 0, once the slab headers are read, then about every 16 MiB
	// of slabs; done never decreases, and reaches total when the check
	// runs to the end. A check that yield stops, or that damage stops
	// before the slab headers, ends without reaching total, or without a
	// call.
	Progress func(done, total int64)
}

// CheckFileOptions is CheckFileStats with options; opts may be nil.
func CheckFileOptions(path string, opts *CheckOptions, yield func(Problem) bool) (stats CheckStats, err error) {
	f, err := os.Open(path)
	if err != nil {
		return stats, err
	}
	defer f.Close()
	// A pool open for writing elsewhere changes under the checker, which
	// would report problems that are not there.
	if err := Lock(f, false, -1); err != nil {
		return stats, fmt.Errorf("check %s: %w", path, err)
	}
	c := &checker{path: path, f: f, yield: yield}
	if opts != nil {
		c.progress = opts.Progress
	}
	// A file truncated by someone else while it is mapped faults on the
	// pages that are gone; that must be an error, not a crash. Any other
	// panic, in yield for instance, is not ours to turn into an error.
	err = fsx.CatchFault(c.mapped, c.run)
	if fe := (*fsx.FaultError)(nil); errors.As(err, &fe) {
		err = fmt.Errorf("check %s: the file changed while being checked: %w", path, err)
	}
	return c.stats, err
}

// checker is one run of CheckFile.
type checker struct {
	path  string
	f     *os.File
	yield func(Problem) bool
	// stopped is set once yield returned false.
	stopped bool
	stats   CheckStats
	// progress is CheckOptions.Progress; reported is the done it was last
	// called with.
	progress func(done, total int64)
	reported uint32

	fileSize int64
	slot     int // the header slot in use
	// walk is h with Slabs cut to the slabs that lie wholly in the file.
	walk  layout.Header
	state layout.State
	// ptrRules holds the header in use, the mapping, the type table and
	// the index of the usable slabs.
	ptrRules
}

// mapped reports whether addr lies in the mapping of the pool.
func (c *checker) mapped(addr uintptr) bool {
	return len(c.mem) > 0 && addr-uintptr(unsafe.Pointer(unsafe.SliceData(c.mem))) < uintptr(len(c.mem))
}

// report hands a problem to yield and returns false once yield asked to
// stop.
func (c *checker) report(kind string, off int64, where string, err error) bool {
	if c.stopped {
		return false
	}
	if !c.yield(Problem{Kind: kind, Offset: off, Where: where, Err: err}) {
		c.stopped = true
	}
	return !c.stopped
}

// run checks the pool step by step: each step needs the ones before it,
// and stops the check when what it found leaves nothing to build on.
func (c *checker) run() error {
	ok, err := c.header()
	if err != nil || !ok {
		return err
	}
	dev, err := device.Private{}.Map(c.f, int(min(uint64(c.fileSize), c.h.Size)), device.MapRequest{})
	if err != nil {
		return fmt.Errorf("check %s: %w", c.path, err)
	}
	defer dev.Close()
	c.mem = dev.Bytes()
	c.walk = c.h
	c.walk.Slabs = min(c.h.Slabs, (uint64(len(c.mem))-c.h.SlabOff)/c.h.SlabSize)
	_ = c.swizzle() && c.rollback(dev) && c.heapState() && c.typeTable() &&
		c.slabHeaders() && c.summary() && c.root() && c.objects()
	return nil
}

// header reads both header slots and chooses the one to check the pool
// by, as ReadHeader does. It returns false when nothing past the headers
// can be checked.
func (c *checker) header() (bool, error) {
	fi, err := c.f.Stat()
	if err != nil {
		return false, err
	}
	c.fileSize = fi.Size()
	var (
		hdrs       [2]layout.Header
		errs       [2]error
		magic, cut [2]bool
		buf        [layout.HeaderBytes]byte
	)
	for i := range hdrs {
		n, err := c.f.ReadAt(buf[:], layout.SlotOff(i))
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("check %s: read header slot %c: %w", c.path, 'A'+i, err)
		}
		magic[i] = n >= len(layout.Magic) && string(buf[:len(layout.Magic)]) == layout.Magic
		cut[i] = n < layout.HeaderBytes
		hdrs[i], errs[i] = layout.DecodeHeader(buf[:n])
		errs[i] = dropWhere(errs[i], "header")
	}
	for i := range errs {
		// A newer format is not ours to judge, even in one slot: Open
		// refuses it too.
		if errors.Is(errs[i], pmemgo.ErrVersion) {
			return false, fmt.Errorf("check %s: header slot %c: %w", c.path, 'A'+i, errs[i])
		}
	}
	if errs[0] != nil && errs[1] != nil {
		if !magic[0] && !magic[1] {
			return false, fmt.Errorf("check %s: file of %d bytes has no pool header: %w", c.path, c.fileSize, pmemgo.ErrNotPool)
		}
		for i := range errs {
			if !cut[i] && !c.report("header", layout.SlotOff(i), slotWhere(i), slotError(errs[i])) {
				return false, nil
			}
		}
		if cut[0] || cut[1] {
			c.report("size", c.fileSize, "file", fmt.Errorf("%d bytes, too short for two header slots: %w", c.fileSize, pmemgo.ErrTruncated))
		}
		return false, nil
	}
	c.slot = 0
	if errs[0] != nil || (errs[1] == nil && hdrs[1].Seq > hdrs[0].Seq) {
		c.slot = 1
	}
	c.h = hdrs[c.slot]
	if !c.otherSlot(&hdrs, &errs, cut) {
		return false, nil
	}
	return c.size()
}

func slotWhere(i int) string { return "header slot " + string(rune('A'+i)) }

// slotError returns the error of a slot that fails to decode. A slot
// without the magic, in a file whose other slot has it, is a damaged slot,
// not a sign that the file is not a pool.
func slotError(err error) error {
	if errors.Is(err, pmemgo.ErrNotPool) {
		return fmt.Errorf("%v, although the other slot has it: %w", err, pmemgo.ErrCorrupt)
	}
	return err
}

// otherSlot reports what is wrong with the slot not in use.
func (c *checker) otherSlot(hdrs *[2]layout.Header, errs *[2]error, cut [2]bool) bool {
	o := 1 - c.slot
	switch {
	case cut[o]:
		// The size problem says it.
		return true
	case errs[o] != nil && c.openMark():
		// Open takes this slot for a header write torn by a crash.
		return c.report("header", layout.SlotOff(o), slotWhere(o), fmt.Errorf(
			"%v (the pool was not closed cleanly, so this may be a header write torn by a crash; Open uses %s): %w",
			errs[o], slotWhere(c.slot), ErrNeedsRecovery))
	case errs[o] != nil:
		return c.report("header", layout.SlotOff(o), slotWhere(o), fmt.Errorf(
			"%w (the pool was closed cleanly, so both slots should be valid; Open refuses the pool)", slotError(errs[o])))
	}
	if err := sameGeometry(&hdrs[c.slot], &hdrs[o]); err != nil {
		return c.report("header", layout.SlotOff(o), slotWhere(o), fmt.Errorf("disagrees with %s: %w: %w", slotWhere(c.slot), err, pmemgo.ErrCorrupt))
	}
	return true
}

// openMark reports whether the pool's open mark is set: it was not closed
// cleanly.
func (c *checker) openMark() bool {
	var mark [8]byte
	n, _ := c.f.ReadAt(mark[:], layout.OpenMarkOff)
	return n == len(mark) && layout.OpenMark(mark[:]) != 0
}

// size compares the file size with the header's. It returns false when
// the file ends before the slabs, so that there is nothing to check.
func (c *checker) size() (bool, error) {
	size := uint64(c.fileSize)
	if size >= c.h.Size {
		// Bytes after the pool are left by a growth interrupted between
		// extending the file and writing the header; Open reuses them.
		return true, nil
	}
	var err error
	switch {
	case size < c.h.SlabOff:
		err = fmt.Errorf("%d bytes, but the header records %d: it ends inside the metadata, which ends at %d, so nothing more can be checked: %w",
			size, c.h.Size, c.h.SlabOff, pmemgo.ErrTruncated)
	default:
		err = fmt.Errorf("%d bytes, but the header records %d: the last %d bytes are missing: %w", size, c.h.Size, c.h.Size-size, pmemgo.ErrTruncated)
	}
	ok := c.report("size", int64(min(size, c.h.Size)), "file", err)
	return ok && size >= c.h.SlabOff, nil
}

// swizzle reports an interrupted swizzle and sets the table pointers are
// read through.
func (c *checker) swizzle() bool {
	h := &c.h
	if h.Flags&layout.FlagSwizzling == 0 {
		return true
	}
	c.swizzling, c.gen = true, h.SwizzleGen
	// Slabs rewritten before the swizzle was interrupted hold pointers
	// relative to the target already: the table resumes.
	c.table = swizzle.Table{Old: h.Old, Target: h.Target, Size: h.Size, Resuming: true}
	return c.report("swizzle", layout.SlotOff(c.slot), slotWhere(c.slot), fmt.Errorf(
		"a relocation to base %#x (swizzle generation %d) was interrupted; Open resumes it, and pointers are read through %s: %w",
		h.Target, h.SwizzleGen, c.table.String(), ErrNeedsRecovery))
}

// rollback rolls a live undo log back in the private mapping, so that the
// rest of the check sees the pool as Open would leave it.
func (c *checker) rollback(dev device.Device) bool {
	h := c.h
	// Entries for bytes past the end of a truncated file are corrupt here.
	h.Size = uint64(len(c.mem))
	n, err := Rollback(dev, &h)
	c.stats.RolledBack = n
	if err != nil && !c.report("undo-log", int64(h.LogOff), "undo log", dropWhere(err, "undo log")) {
		return false
	}
	if n > 0 {
		return c.report("undo-log", int64(h.LogOff), "undo log", fmt.Errorf(
			"holds an interrupted transaction: Open rolls back its %d entries, and the rest of this check sees the pool rolled back: %w",
			n, ErrNeedsRecovery))
	}
	return true
}

func (c *checker) heapState() bool {
	s, err := layout.DecodeState(c.mem[layout.StateOff:], &c.h)
	if err != nil {
		c.report("state", layout.StateOff, "heap state", dropWhere(err, "heap state"))
		return false
	}
	c.state = s
	return true
}

// typeTable decodes the type table and resolves, for every pointer of
// every type, the type it must point to.
func (c *checker) typeTable() bool {
	h := &c.h
	types, err := layout.DecodeTypeTable(c.mem[h.TypeOff:h.TypeOff+c.state.TypeBytes], c.state.Types, h.TypeOff)
	if err != nil {
		c.report("type-table", int64(h.TypeOff), "type table", dropWhere(err, "type table"))
		return false
	}
	c.types = types
	ids := make(map[string]uint32, len(types))
	for i := range types {
		if prev, dup := ids[types[i].Name]; dup {
			if !c.report("type-table", int64(h.TypeOff), typeWhere(i+1, types[i].Name),
				fmt.Errorf("has the same name as type %d: %w", prev, pmemgo.ErrCorrupt)) {
				return false
			}
			continue
		}
		ids[types[i].Name] = uint32(i + 1)
	}
	var ok bool
	c.targets, ok = pointerTargets(types, func(id int, p layout.Pointer) bool {
		return c.report("type-table", int64(h.TypeOff), typeWhere(id, types[id-1].Name),
			fmt.Errorf("field %s points to type %s, which the table lacks: %w", ptrField(p), p.Target, pmemgo.ErrCorrupt))
	})
	return ok
}

func typeWhere(id int, name string) string { return fmt.Sprintf("type %d (%s)", id, name) }

func ptrField(p layout.Pointer) string {
	if p.Field == "" {
		return "(value)"
	}
	return p.Field
}

// slabHeaders decodes the slab headers below the high-water mark, reports
// the bad ones and indexes the usable ones.
func (c *checker) slabHeaders() bool {
	c.setGeometry()
	c.stateHigh = c.state.SlabHigh
	c.high = uint32(min(uint64(c.stateHigh), c.walk.Slabs))
	c.owner = make([]int32, c.high)
	for i := range c.owner {
		c.owner[i] = slabFree
	}
	// skip is where the extent of a slab accepted despite a bad count
	// ends: WalkSlabs, which saw an error there, goes on inside it.
	var skip uint32
	ok := true
	layout.WalkSlabs(c.mem, &c.walk, c.high, func(i uint32, sh *layout.SlabHeader, err error) bool {
		switch {
		case i < skip:
		case err != nil:
			ok = c.badSlab(i, err, &skip)
		default:
			ok = c.goodSlab(i, sh)
		}
		return ok
	})
	return ok
}

// badSlab reports a slab header that failed to decode. One whose bitmap
// only disagrees with its used count is a bitmap problem: the header is
// sound and the slab is checked by its bitmap.
func (c *checker) badSlab(i uint32, err error, skip *uint32) bool {
	off := c.h.SlabOffset(i)
	span := c.walk.SlabOff + c.walk.Slabs*c.walk.SlabSize - off
	sh, set, cerr := layout.DecodeSlabHeaderCounted(c.mem[off:], span, c.h.SlabSize)
	if cerr != nil {
		c.owner[i] = slabBad
		return c.report("slab", int64(off), slabWhere(i), slabErr(err))
	}
	if !c.report("bitmap", int64(off), slabWhere(i), fmt.Errorf("the bitmap marks %d slots allocated, the header counts %d: %w", set, sh.Used, pmemgo.ErrCorrupt)) {
		return false
	}
	*skip = i + sh.Extent
	return c.goodSlab(i, &sh)
}

func slabWhere(i uint32) string { return "slab " + strconv.FormatUint(uint64(i), 10) }

// placedError is an error whose message leaves out the place that the
// message of the error it wraps starts with.
type placedError struct {
	msg string
	err error
}

func (e *placedError) Error() string { return e.msg }
func (e *placedError) Unwrap() error { return e.err }

// dropWhere returns err without the "<place>...: " its message starts
// with, when it starts with place. The layout decoders say where what they
// found is ("heap state at offset 8192: checksum ..."), and so does a
// Problem, in Where and Offset.
func dropWhere(err error, place string) error {
	if err == nil {
		return nil
	}
	msg, ok := strings.CutPrefix(err.Error(), place)
	if !ok {
		return err
	}
	if _, rest, ok := strings.Cut(msg, ": "); ok {
		return &placedError{msg: rest, err: err}
	}
	return err
}

// slabErr drops the slab and offset a *layout.SlabError adds: the
// problem's Where and Offset say them.
func slabErr(err error) error {
	if se, ok := errors.AsType[*layout.SlabError](err); ok {
		return se.Err
	}
	return err
}

// goodSlab checks what a decoded slab header says against the type table
// and the pool, and indexes the slab if it can be used.
func (c *checker) goodSlab(i uint32, sh *layout.SlabHeader) bool {
	off := c.h.SlabOffset(i)
	err := SlabTypeProblem(&c.walk, i, sh, c.high, c.types)
	if err == nil && uint64(layout.BitmapBytes(sh.Slots))*8 < uint64(sh.Slots) {
		err = fmt.Errorf("%d slots is more than a bitmap can hold: %w", sh.Slots, pmemgo.ErrCorrupt)
	}
	if err != nil {
		c.owner[i] = slabBad
		return c.report("slab", int64(off), slabWhere(i), slabErr(err))
	}
	if !c.swizzling && sh.Gen > c.h.SwizzleGen {
		if !c.report("slab", int64(off), slabWhere(i), fmt.Errorf("swizzle generation %d is ahead of the pool's %d: %w", sh.Gen, c.h.SwizzleGen, pmemgo.ErrCorrupt)) {
			return false
		}
	}
	bm := layout.Bitmap(c.mem[off:], sh.Slots)
	if extra := sh.Slots % 64; extra != 0 {
		if w := binary.LittleEndian.Uint64(bm[len(bm)-8:]) >> extra; w != 0 {
			if !c.report("bitmap", int64(off)+int64(layout.BitmapWordOff(sh.Slots-1)), slabWhere(i), fmt.Errorf(
				"%d bits are set past the last of the %d slots: %w", mbits.OnesCount64(w), sh.Slots, pmemgo.ErrCorrupt)) {
				return false
			}
		}
	}
	for k := i; k < i+sh.Extent; k++ {
		c.owner[k] = int32(len(c.heads))
	}
	c.heads = append(c.heads, newSlabHead(c.mem, &c.h, i, sh, c.types))
	c.stats.Slabs++
	return true
}

// root checks that the root is an allocated object of the type the heap
// state records.
func (c *checker) root() bool {
	st := &c.state
	if st.RootOff == 0 {
		return true
	}
	fail := func(format string, args ...any) bool {
		return c.report("root", layout.StateOff, "heap state root", fmt.Errorf("points to pool offset %d, "+format+": %w",
			append(append([]any{st.RootOff}, args...), pmemgo.ErrCorrupt)...))
	}
	s, ok, kind, what := c.locate(st.RootOff)
	switch {
	case !ok && kind == "":
		return true
	case !ok:
		return fail("%s", what)
	case s.head.sh.Kind != layout.KindObjects || s.head.sh.Type != st.RootType:
		return fail("in %s, but the root is a %s", s.where(), c.typeName(st.RootType))
	case s.inSlot != 0:
		return fail("%d bytes into %s", s.inSlot, s.where())
	}
	return true
}

func (c *checker) typeName(id uint32) string {
	if id == 0 || int(id) > len(c.types) {
		return fmt.Sprintf("type %d, which the table lacks", id)
	}
	return c.types[id-1].Name
}

// objects checks the pointers of every allocated slot of every usable
// slab, and reports the progress it makes: objects are most of the time a
// check takes.
func (c *checker) objects() bool {
	c.reportProgress(0)
	// step is how many slabs make the 16 MiB between two reports, so that
	// they come at about the same rate whatever the slab size.
	step := max(1, uint32(progressBytes/c.h.SlabSize))
	bad := func(s ptrSite, kind string, err error) bool { return c.report(kind, int64(s.off), s.where(), err) }
	for k := range c.heads {
		hd := &c.heads[k]
		objects, pointers, ok := c.slabPointers(hd, bad, c.mem, 0)
		c.stats.Objects += objects
		c.stats.Pointers += pointers
		if !ok {
			return false
		}
		if end := hd.idx + hd.sh.Extent; end-c.reported >= step {
			c.reportProgress(end)
		}
	}
	if c.reported != c.high {
		c.reportProgress(c.high)
	}
	return true
}

// progressBytes is how many bytes of slabs the checker goes through
// between two calls of CheckOptions.Progress: about a hundredth of a
// second of checking.
const progressBytes = 16 << 20

// reportProgress calls the progress callback, if any, with done slabs
// gone through.
func (c *checker) reportProgress(done uint32) {
	if c.progress != nil {
		c.reported = done
		c.progress(int64(done), int64(c.high))
	}
}
