package swizzle

import (
	"encoding/binary"
	"fmt"
	mbits "math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// Plan is a swizzle to carry out: the pool, its decoded metadata and where
// pointers go.
type Plan struct {
	Dev    device.Device
	Header *layout.Header
	// Types are the pool's type descriptors; type id i is Types[i-1].
	Types []layout.TypeDesc
	// SlabHigh is the heap state's high-water mark.
	SlabHigh uint32
	Table    Table
	// Gen is the swizzle generation being carried out: slabs stamped with
	// it are done.
	Gen uint64
	// Workers is the number of goroutines rewriting; 0 means GOMAXPROCS.
	Workers int
	// Batch is how many slabs are made durable per fence; 0 means 64.
	Batch int

	// bufs are the workers' copy buffers, kept from batch to batch.
	bufs [][]byte
}

// Stats says what a swizzle did.
type Stats struct {
	// Slabs is the number of slabs rewritten; Skipped were done already.
	Slabs, Skipped int
	// Pointers is the number of pointer words rewritten.
	Pointers int64
	// Bytes is the size of the slabs rewritten that hold pointers.
	Bytes int64
	// Duration is the wall time of the rewrite.
	Duration time.Duration
}

type job struct {
	slab uint32
	sh   layout.SlabHeader
	td   *layout.TypeDesc
}

// list lists the slabs that are not yet stamped with p.Gen, and counts
// those that are.
func (p *Plan) list() ([]job, int, error) {
	var jobs []job
	var skipped int
	var werr error
	mem := p.Dev.Bytes()
	layout.WalkSlabs(mem, p.Header, p.SlabHigh, func(i uint32, sh *layout.SlabHeader, err error) bool {
		if err != nil {
			werr = err
			return false
		}
		if sh.Type == 0 || int(sh.Type) > len(p.Types) {
			werr = &layout.SlabError{Slab: i, Offset: p.Header.SlabOffset(i), Err: fmt.Errorf("type id %d, pool has %d types: %w", sh.Type, len(p.Types), pmemgo.ErrCorrupt)}
			return false
		}
		td := &p.Types[sh.Type-1]
		if sh.Gen == p.Gen {
			skipped++
			return true
		}
		jobs = append(jobs, job{slab: i, sh: *sh, td: td})
		return true
	})
	return jobs, skipped, werr
}

// Run rewrites every slab not yet stamped with p.Gen, making each batch
// durable before stamping it. The caller validates every pointer first
// (recovery applies the checker's rules, reading pointers through
// p.Table): a pointer with no reading in the table, found by Run, leaves
// the swizzle half done (resumable, but written). Run does not touch the
// pool header: the caller records the start and the end of the swizzle
// there.
func (p *Plan) Run() (Stats, error) {
	var st Stats
	t0 := time.Now()
	jobs, skipped, err := p.list()
	if err != nil {
		return st, err
	}
	st.Skipped = skipped
	batch := p.Batch
	if batch <= 0 {
		batch = 64
	}
	mem := p.Dev.Bytes()
	for start := 0; start < len(jobs); start += batch {
		chunk := jobs[start:min(start+batch, len(jobs))]
		n, err := p.parallel(chunk)
		if err != nil {
			return st, err
		}
		st.Pointers += n
		for _, j := range chunk {
			if len(j.td.Ptrs) > 0 {
				off := int(p.Header.SlabOffset(j.slab))
				p.Dev.Flush(off+int(j.sh.DataOff), int(j.sh.Slots*j.sh.SlotSize))
			}
		}
		// The stamps must not become durable before the pointers they vouch
		// for, so they are written only after this fence.
		if err := p.Dev.Fence(); err != nil {
			return st, fmt.Errorf("swizzle: %w", err)
		}
		for _, j := range chunk {
			off := int(p.Header.SlabOffset(j.slab))
			layout.SetSlabGen(mem[off:], p.Gen)
			p.Dev.Flush(off, layout.SlabHeaderSize)
			st.Slabs++
			if len(j.td.Ptrs) > 0 {
				st.Bytes += int64(j.sh.Extent) * int64(p.Header.SlabSize)
			}
		}
	}
	if err := p.Dev.Fence(); err != nil {
		return st, fmt.Errorf("swizzle: %w", err)
	}
	st.Duration = time.Since(t0)
	return st, nil
}

// parallel rewrites the slabs of jobs on p.Workers goroutines, a run of
// slabs at a time (see Runs), and returns the number of pointers changed.
func (p *Plan) parallel(jobs []job) (int64, error) {
	var ptrs []*job
	for k := range jobs {
		if len(jobs[k].td.Ptrs) > 0 {
			ptrs = append(ptrs, &jobs[k])
		}
	}
	runs := Runs(len(ptrs), func(i int) (uint64, uint64) { return p.slotArea(ptrs[i]) }, RunBytes)
	workers := p.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(runs))
	if len(p.bufs) < workers {
		p.bufs = append(p.bufs, make([][]byte, workers-len(p.bufs))...)
	}
	var (
		next   atomic.Int64
		total  atomic.Int64
		once   sync.Once
		first  error
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := &p.bufs[w]
			for !failed.Load() {
				k := int(next.Add(1) - 1)
				if k >= len(runs) {
					return
				}
				n, err := p.run(&runs[k], ptrs[runs[k].First:runs[k].End], buf)
				total.Add(n)
				if err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return total.Load(), first
}

// slotArea returns the pool offset and size of j's slot area.
func (p *Plan) slotArea(j *job) (uint64, uint64) {
	return p.Header.SlabOffset(j.slab) + uint64(j.sh.DataOff), uint64(j.sh.Slots) * uint64(j.sh.SlotSize)
}

// maxCopy is the largest run rewritten in a copy (see run); larger ones,
// arrays of many slabs, are rewritten in place rather than held in a
// buffer of their size.
const maxCopy = 4 << 20

// run rewrites the pointers of every allocated slot of the slabs of jobs,
// which run covers. When the device shares its pages with the file, the
// run is read into buf with one read, rewritten there and the part from
// the first slot area changed to the last written back with one write, so
// that the mapping's pages are not touched: a first touch can cost far
// more than the copy (see device.FileAccess).
func (p *Plan) run(run *Run, jobs []*job, buf *[]byte) (int64, error) {
	mem := p.Dev.Bytes()
	fa, ok := p.Dev.(device.FileAccess)
	if !ok || run.Len > maxCopy {
		var total int64
		for _, j := range jobs {
			off, size := p.slotArea(j)
			n, err := p.rewrite(j, p.bitmap(j), mem[off:off+size])
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
	if uint64(cap(*buf)) < run.Len {
		*buf = make([]byte, run.Len)
	}
	data := (*buf)[:run.Len]
	if err := fa.ReadAt(data, int64(run.Off)); err != nil {
		return 0, fmt.Errorf("swizzle slab %d: %w", jobs[0].slab, err)
	}
	var (
		total  int64
		err    error
		lo, hi = run.Len, uint64(0)
	)
	for _, j := range jobs {
		off, size := p.slotArea(j)
		rel := off - run.Off
		var n int64
		n, err = p.rewrite(j, p.bitmap(j), data[rel:rel+size])
		if n > 0 {
			total += n
			lo, hi = min(lo, rel), max(hi, rel+size)
		}
		if err != nil {
			break
		}
	}
	if lo < hi {
		// Written back even after a bad pointer, as in place: the slab is
		// then half rewritten, which a resumed swizzle reads correctly.
		if werr := fa.WriteAt(data[lo:hi], int64(run.Off+lo)); werr != nil {
			return total, fmt.Errorf("swizzle slab %d: %w", jobs[0].slab, werr)
		}
	}
	return total, err
}

// bitmap returns the allocation bitmap of j's slab, in the mapping.
func (p *Plan) bitmap(j *job) []byte {
	return layout.Bitmap(p.Dev.Bytes()[p.Header.SlabOffset(j.slab):], j.sh.Slots)
}

// rewrite relocates the pointers of the allocated slots of slot area data,
// whose allocation bitmap is bm.
func (p *Plan) rewrite(j *job, bm, data []byte) (int64, error) {
	base := unsafe.Pointer(unsafe.SliceData(data))
	stride := uintptr(j.td.Size)
	t := &p.Table
	var n int64
	for w := 0; w < len(bm); w += 8 {
		bits := binary.LittleEndian.Uint64(bm[w:])
		for bits != 0 {
			b := mbits.TrailingZeros64(bits)
			bits &= bits - 1
			slot := uint32(w/8*64 + b)
			if slot >= j.sh.Slots {
				break
			}
			obj := unsafe.Add(base, uintptr(slot)*uintptr(j.sh.SlotSize))
			for e := range uintptr(j.sh.Elems) {
				elem := unsafe.Add(obj, e*stride)
				for pi := range j.td.Ptrs {
					word := (*uint64)(unsafe.Add(elem, j.td.Ptrs[pi].Offset))
					v := *word
					nv, ok := t.Relocate(v)
					if !ok {
						return n, p.badPointer(j, slot, uint32(e), pi, v)
					}
					if nv != v {
						*word = nv
						n++
					}
				}
			}
		}
	}
	return n, nil
}

func (p *Plan) badPointer(j *job, slot, elem uint32, pi int, v uint64) error {
	ptr := j.td.Ptrs[pi]
	obj := fmt.Sprintf("object %d", slot)
	if j.sh.Kind == layout.KindArray {
		obj = fmt.Sprintf("array %d element %d", slot, elem)
	}
	off := p.Header.SlabOffset(j.slab) + uint64(j.sh.DataOff) + uint64(slot)*uint64(j.sh.SlotSize) + uint64(elem)*uint64(j.td.Size) + uint64(ptr.Offset)
	return fmt.Errorf("slab %d %s (type %s) field %s at offset %d: pointer %#x is outside the pool's ranges %s: %w",
		j.slab, obj, j.td.Name, fieldName(ptr), off, v, p.Table.String(), pmemgo.ErrCorrupt)
}

func fieldName(ptr layout.Pointer) string {
	if ptr.Field == "" {
		return "(value)"
	}
	return ptr.Field
}
