package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	mbits "math/bits"
	"strconv"

	"github.com/pmemgo/pmemgo/internal/layout"
)

// ErrUnreachable is wrapped by the problems CheckLeaks reports: an
// allocated slot that nothing reachable from the root points to. No
// transaction can free it any more, since nothing leads to it; pmemctl gc
// frees such slots in a copy of the pool.
var ErrUnreachable = errors.New("pmemgo: unreachable object")

// Slot is an allocated slot of a slab: an object, or an array (the
// backing store of a slice, the bytes of a string).
type Slot struct {
	// Slab is the slab, the first of its extent, and Index the slot in it.
	Slab, Index uint32
	// Off is the pool offset of the slot and Size its size in bytes.
	Off  uint64
	Size uint32
	// Kind is layout.KindObjects or layout.KindArray; an array slot holds
	// Elems elements of Type.
	Kind  uint8
	Elems uint32
	Type  *layout.TypeDesc
}

// ID returns the slot's identity in tools' output, "slab:slot" ("3:17"):
// it does not change while the slot stays allocated, whatever base the
// pool is mapped at.
func (s Slot) ID() string {
	return strconv.FormatUint(uint64(s.Slab), 10) + ":" + strconv.FormatUint(uint64(s.Index), 10)
}

// Where names the slot as the checker's problems do: "slab 3 object 5
// (main.Node)", "slab 4 array 2 of uint8".
func (s Slot) Where() string {
	if s.Kind == layout.KindArray {
		return fmt.Sprintf("slab %d array %d of %s", s.Slab, s.Index, s.Type.Name)
	}
	return fmt.Sprintf("slab %d object %d (%s)", s.Slab, s.Index, s.Type.Name)
}

// ReachStats counts what a walk found.
type ReachStats struct {
	// Allocated counts the allocated slots and AllocatedBytes their size;
	// Reached and ReachedBytes the same for those reachable from the root.
	Allocated, Reached           int64
	AllocatedBytes, ReachedBytes uint64
}

// Unreached returns the number of allocated slots the root does not
// reach, and their bytes.
func (s ReachStats) Unreached() (int64, uint64) {
	return s.Allocated - s.Reached, s.AllocatedBytes - s.ReachedBytes
}

// Reach is the result of Walk: which allocated slots of an image are
// reachable from its root. It reads the image's bytes, so it is valid only
// while they are mapped and unchanged.
type Reach struct {
	ReachStats
	slabs []walkSlab
}

// walkSlab is a slab in use, with the marks of the slots the walk reached.
type walkSlab struct {
	idx   uint32
	sh    layout.SlabHeader
	td    *layout.TypeDesc
	data  uint64 // pool offset of slot 0
	bm    []byte
	marks []uint64
}

func (s *walkSlab) slot(i uint32) Slot {
	return Slot{
		Slab: s.idx, Index: i, Off: s.data + uint64(i)*uint64(s.sh.SlotSize), Size: s.sh.SlotSize,
		Kind: s.sh.Kind, Elems: s.sh.Elems, Type: s.td,
	}
}

// allocated returns the bitmap word w with the bits past the last slot
// cleared.
func (s *walkSlab) allocated(w int) uint64 {
	bits := binary.LittleEndian.Uint64(s.bm[w*8:])
	if rest := s.sh.Slots - uint32(w)*64; rest < 64 {
		bits &= 1<<rest - 1
	}
	return bits
}

// walker is one run of Walk.
type walker struct {
	img   *Image
	r     *Reach
	shift uint    // log2 of the slab size
	owner []int32 // per slab below the high-water mark: index in r.slabs, or -1
	stack []walkRef
	// progress, if set, is called every progressEvery slots reached.
	progress func(reached, allocated int64)
}

type walkRef struct {
	slab int32
	slot uint32
}

const progressEvery = 1 << 14

// Walk finds the allocated slots of img that are reachable from its root:
// it follows, from the root, every non-nil pointer word of every reached
// slot, as the stored pointer maps list them (object pointers,
// unsafe.Pointers, and the data words of strings and slices), element by
// element for arrays. A pointer marks the slot it points into, wherever in
// the slot it points, so that what the walk leaves unmarked is garbage
// whatever the pointers' kinds; pointers that land outside every allocated
// slot, which the checker reports, are ignored. It fails only when a slab
// header does not decode or disagrees with the type table. progress, if
// not nil, is called now and then with the slots reached so far and the
// slots allocated.
func Walk(img *Image, progress func(reached, allocated int64)) (*Reach, error) {
	w := &walker{img: img, r: &Reach{}, progress: progress}
	if err := w.index(); err != nil {
		return nil, err
	}
	if off := img.State.RootOff; off != 0 {
		w.mark(off)
	}
	for len(w.stack) > 0 {
		ref := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		w.scan(&w.r.slabs[ref.slab], ref.slot)
	}
	if progress != nil {
		progress(w.r.Reached, w.r.Allocated)
	}
	return w.r, nil
}

// index decodes the slab headers below the high-water mark and counts the
// allocated slots.
func (w *walker) index() error {
	h, img := &w.img.Header, w.img
	w.shift = uint(mbits.TrailingZeros64(h.SlabSize))
	high := img.State.SlabHigh
	w.owner = make([]int32, high)
	for i := range w.owner {
		w.owner[i] = -1
	}
	var err error
	layout.WalkSlabs(img.Mem, h, high, func(i uint32, sh *layout.SlabHeader, serr error) bool {
		if serr == nil {
			serr = SlabTypeProblem(h, i, sh, high, img.Types)
		}
		if serr != nil {
			err = fmt.Errorf("walk: %w", serr)
			return false
		}
		off := h.SlabOffset(i)
		s := walkSlab{
			idx: i, sh: *sh, td: &img.Types[sh.Type-1], data: off + uint64(sh.DataOff),
			bm: layout.Bitmap(img.Mem[off:], sh.Slots), marks: make([]uint64, layout.BitmapBytes(sh.Slots)/8),
		}
		for k := range len(s.marks) {
			n := int64(mbits.OnesCount64(s.allocated(k)))
			w.r.Allocated += n
			w.r.AllocatedBytes += uint64(n) * uint64(sh.SlotSize)
		}
		for k := i; k < i+sh.Extent; k++ {
			w.owner[k] = int32(len(w.r.slabs))
		}
		w.r.slabs = append(w.r.slabs, s)
		return true
	})
	return err
}

// mark marks the allocated slot holding pool offset off, if any, and
// queues it for scanning the first time.
func (w *walker) mark(off uint64) {
	h := &w.img.Header
	if off < h.SlabOff {
		return
	}
	idx := (off - h.SlabOff) >> w.shift
	if idx >= uint64(len(w.owner)) || w.owner[idx] < 0 {
		return
	}
	k := w.owner[idx]
	s := &w.r.slabs[k]
	if off < s.data {
		return
	}
	n := (off - s.data) / uint64(s.sh.SlotSize)
	if n >= uint64(s.sh.Slots) {
		return
	}
	slot := uint32(n)
	bit := uint64(1) << (slot % 64)
	if s.bm[slot/8]&(1<<(slot%8)) == 0 || s.marks[slot/64]&bit != 0 {
		return
	}
	s.marks[slot/64] |= bit
	w.r.Reached++
	w.r.ReachedBytes += uint64(s.sh.SlotSize)
	if w.progress != nil && w.r.Reached%progressEvery == 0 {
		w.progress(w.r.Reached, w.r.Allocated)
	}
	if len(s.td.Ptrs) > 0 {
		w.stack = append(w.stack, walkRef{slab: k, slot: slot})
	}
}

// scan marks what the pointer words of every element of a slot point to.
func (w *walker) scan(s *walkSlab, slot uint32) {
	mem, base := w.img.Mem, w.img.Base
	start := s.data + uint64(slot)*uint64(s.sh.SlotSize)
	for e := range uint64(s.sh.Elems) {
		elem := start + e*uint64(s.td.Size)
		for k := range s.td.Ptrs {
			v := binary.LittleEndian.Uint64(mem[elem+uint64(s.td.Ptrs[k].Offset):])
			if v == 0 {
				continue
			}
			if off := v - base; off < uint64(len(mem)) {
				w.mark(off)
			}
		}
	}
}

// Unreachable yields every allocated slot the walk did not reach, in slab
// order.
func (r *Reach) Unreachable() iter.Seq[Slot] {
	return func(yield func(Slot) bool) {
		for k := range r.slabs {
			s := &r.slabs[k]
			for w := range s.marks {
				bits := s.allocated(w) &^ s.marks[w]
				for bits != 0 {
					slot := uint32(w*64 + mbits.TrailingZeros64(bits))
					bits &= bits - 1
					if !yield(s.slot(slot)) {
						return
					}
				}
			}
		}
	}
}

// CheckLeaks opens the pool file at path as OpenReadOnly does, recovering
// it in memory only, walks it from the root and calls yield with a
// problem of kind "leak", wrapping ErrUnreachable, for every allocated
// slot the walk does not reach, until yield returns false. It returns what
// the walk counted, and an error when the pool cannot be opened or walked.
// Run CheckFile first: a pool with damaged pointers may have objects that
// only the damaged pointers lead to. progress is passed to Walk.
func CheckLeaks(path string, progress func(reached, allocated int64), yield func(Problem) bool) (ReachStats, error) {
	p, err := OpenReadOnly(path)
	if err != nil {
		return ReachStats{}, err
	}
	defer p.Close()
	r, err := Walk(p.Image(), progress)
	if err != nil {
		return ReachStats{}, fmt.Errorf("check %s: %w", path, err)
	}
	for s := range r.Unreachable() {
		err := fmt.Errorf("%d bytes allocated, but nothing reachable from the root points to them: %w", s.Size, ErrUnreachable)
		if !yield(Problem{Kind: "leak", Offset: int64(s.Off), Where: s.Where(), Err: err}) {
			break
		}
	}
	return r.ReachStats, nil
}
