package crashtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// checkAll checks the planned variants of every crash point, tier by
// tier, each distinct image once, within the time budget; or only the
// state a replay id names. With several workers, each takes every
// Workers-th point of a tier.
func (r *runner) checkAll() {
	r.checked = map[uint64]error{}
	if r.o.Replay != "" {
		r.replay(r.workers[0], r.o.Replay)
		return
	}
	passes := r.plan()
	r.sum.Coverage, r.sum.Sampled = coverage(passes, r.o.Seed)
	for _, ps := range passes {
		r.sum.Taken += ps.dups
		if len(r.workers) == 1 {
			r.checkPass(r.workers[0], &ps, 0)
		} else {
			var wg sync.WaitGroup
			for k, w := range r.workers {
				wg.Go(func() { r.checkPass(w, &ps, k) })
			}
			wg.Wait()
		}
		if r.truncated.Load() {
			break
		}
	}
	for _, w := range r.workers {
		r.sum.Taken += w.taken
		r.sum.Images += w.images
	}
	r.sum.Truncated = r.truncated.Load()
}

// checkPass checks worker w's share of a tier: the points whose index is
// k modulo the number of workers.
func (r *runner) checkPass(w *worker, ps *pass, k int) {
	w.s.reset(r.rec.journal)
	for i := k; i < len(r.points); i += len(r.workers) {
		p := &r.points[i]
		if len(ps.variants[i]) == 0 {
			continue
		}
		w.s.advance(r.rec.journal, p.journal)
		for _, v := range ps.variants[i] {
			w.taken++
			if _, ok := r.cached(imageKey(p, v)); ok {
				continue
			}
			if r.truncated.Load() || time.Since(r.start) > r.o.MaxTime {
				r.truncated.Store(true)
				return
			}
			w.images++
			if err := r.checkVariant(w, p, v); err != nil {
				r.fail(w, p, v, err)
			}
		}
	}
}

// cached returns the result of the image with key, if it was checked.
func (r *runner) cached(key uint64) (error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	err, ok := r.checked[key]
	return err, ok
}

// imageKey identifies an image: the durable prefix and the lines on top.
func imageKey(p *point, v []Line) uint64 {
	var d xxhash.Digest
	d.Reset()
	var w [16]byte
	binary.LittleEndian.PutUint64(w[:], uint64(p.journal))
	d.Write(w[:8])
	for _, l := range v {
		binary.LittleEndian.PutUint64(w[:], uint64(l.Index))
		binary.LittleEndian.PutUint64(w[8:], uint64(l.Words))
		d.Write(w[:])
		d.Write(extraData(p, l.Index)[:l.Words*8])
	}
	return d.Sum64()
}

func extraData(p *point, line int) []byte {
	for i := range p.extras {
		if p.extras[i].line == line {
			return p.extras[i].data[:]
		}
	}
	return nil
}

// checkVariant checks the image of point p with the lines of v on top,
// from the cache when that image was checked already.
func (r *runner) checkVariant(w *worker, p *point, v []Line) error {
	key := imageKey(p, v)
	if err, ok := r.cached(key); ok {
		return err
	}
	w.s.apply(p, v)
	err := r.checkImage(w, p.op)
	w.s.restore(v)
	r.mu.Lock()
	r.checked[key] = err
	r.mu.Unlock()
	return err
}

// checkImage checks the image in w's scratch as a reopen after the crash would see
// it: the offline checker first, then the reachability walk, then
// pmemgo's recovery at a new base, then the user's recovery and check.
// Nothing is written to the image.
func (r *runner) checkImage(w *worker, op int) (err error) {
	// A panic in the checker, the engine or the workload's code is that
	// image's failure, not the end of the run.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	var problems []string
	err = recovery.CheckFile(w.s.path, func(p recovery.Problem) bool {
		// A crash image may well hold a live undo log, a swizzle under way
		// or a torn header slot: recovery deals with those.
		if !errors.Is(p.Err, recovery.ErrNeedsRecovery) {
			problems = append(problems, p.String())
		}
		return len(problems) < 5
	})
	if err != nil {
		return fmt.Errorf("checker: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("checker: %s", strings.Join(problems, "; "))
	}
	h, err := heap.Open(w.s.path, &heap.Options{Device: w.m, ForceRelocate: true})
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer h.Close()
	if !r.o.AllowLeaks {
		if err := w.leaks(h); err != nil {
			return err
		}
	}
	if r.w.Recover != nil {
		if err := r.w.Recover(h); err != nil {
			return fmt.Errorf("user recovery: %w", err)
		}
	}
	if r.w.Check != nil {
		if err := r.w.Check(h, op); err != nil {
			return fmt.Errorf("check: %w", err)
		}
	}
	return nil
}

// maxLeaksNamed bounds the leaked objects a failure names.
const maxLeaksNamed = 3

// leaks walks the pool just recovered from its root, as pmemctl check
// --leaks does with an image, and names the allocated objects the walk
// does not reach.
func (w *worker) leaks(h *heap.Heap) error {
	img, err := w.image(h)
	if err != nil {
		return fmt.Errorf("leak check: %w", err)
	}
	reach, err := recovery.Walk(img, nil)
	if err != nil {
		return fmt.Errorf("leak check: %w", err)
	}
	n, bytes := reach.Unreached()
	if n == 0 {
		return nil
	}
	var named []string
	for s := range reach.Unreachable() {
		named = append(named, s.Where())
		if len(named) == maxLeaksNamed {
			break
		}
	}
	return fmt.Errorf("leak: %d unreachable objects (%d bytes) allocated, nothing reachable from the root points to them: %s: %w",
		n, bytes, strings.Join(named, ", "), recovery.ErrUnreachable)
}

// image decodes the metadata of a pool just opened, which recovery left
// in its mapping, for the reachability walk. The type table, the same in
// most images, is decoded once per content.
func (w *worker) image(h *heap.Heap) (*recovery.Image, error) {
	mem := h.Device().Bytes()
	hdr, ok := currentHeader(mem)
	if !ok {
		return nil, errors.New("no header slot decodes")
	}
	st, err := layout.DecodeState(mem[layout.StateOff:], &hdr)
	if err != nil {
		return nil, err
	}
	if hdr.TypeOff+st.TypeBytes > uint64(len(mem)) {
		return nil, fmt.Errorf("type table of %d bytes past the end of the pool", st.TypeBytes)
	}
	table := mem[hdr.TypeOff : hdr.TypeOff+st.TypeBytes]
	key := xxhash.Sum64(table) ^ uint64(st.Types)<<32 ^ hdr.TypeOff
	types, ok := w.types[key]
	if !ok {
		if types, err = layout.DecodeTypeTable(table, st.Types, hdr.TypeOff); err != nil {
			return nil, err
		}
		if w.types == nil {
			w.types = map[uint64][]layout.TypeDesc{}
		}
		w.types[key] = types
	}
	return &recovery.Image{Mem: mem, Base: uint64(h.Base()), Header: hdr, State: st, Types: types}, nil
}
