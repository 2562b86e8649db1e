package crashtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// checkAll checks the planned variants of every crash point, tier by
// tier, each distinct image once, within the time budget; or only the
// state a replay id names.
func (r *runner) checkAll(s *scratch) error {
	r.checked = map[uint64]error{}
	if r.o.Replay != "" {
		return r.replay(s, r.o.Replay)
	}
	passes := r.plan()
	r.sum.Coverage, r.sum.Sampled = coverage(passes, r.o.Seed)
	for _, ps := range passes {
		r.sum.Taken += ps.dups
		s.reset(r.rec.journal)
		for i := range r.points {
			p := &r.points[i]
			if len(ps.variants[i]) == 0 {
				continue
			}
			s.advance(r.rec.journal, p.journal)
			for _, v := range ps.variants[i] {
				r.sum.Taken++
				key := imageKey(p, v)
				if _, ok := r.checked[key]; ok {
					continue
				}
				if time.Since(r.start) > r.o.MaxTime {
					r.sum.Truncated = true
					return nil
				}
				r.sum.Images++
				err := r.checkVariant(s, p, v)
				r.checked[key] = err
				if err != nil {
					r.fail(s, p, v, err)
				}
			}
		}
	}
	return nil
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
func (r *runner) checkVariant(s *scratch, p *point, v []Line) error {
	key := imageKey(p, v)
	if err, ok := r.checked[key]; ok {
		return err
	}
	s.apply(p, v)
	err := r.checkImage(s, p.op)
	s.restore(v)
	r.checked[key] = err
	return err
}

// checkImage checks the image in s as a reopen after the crash would see
// it: the offline checker first, then the reachability walk, then
// pmemgo's recovery at a new base, then the user's recovery and check.
// Nothing is written to the image.
func (r *runner) checkImage(s *scratch, op int) (err error) {
	// A panic in the checker, the engine or the workload's code is that
	// image's failure, not the end of the run.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	var problems []string
	err = recovery.CheckFile(s.path, func(p recovery.Problem) bool {
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
	h, err := heap.Open(s.path, &heap.Options{Device: r.mapper, ForceRelocate: true})
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer h.Close()
	if !r.o.AllowLeaks {
		if err := leaks(h); err != nil {
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
func leaks(h *heap.Heap) error {
	img, err := image(h)
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
// in its mapping, for the reachability walk.
func image(h *heap.Heap) (*recovery.Image, error) {
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
	types, err := layout.DecodeTypeTable(mem[hdr.TypeOff:hdr.TypeOff+st.TypeBytes], st.Types, hdr.TypeOff)
	if err != nil {
		return nil, err
	}
	return &recovery.Image{Mem: mem, Base: uint64(h.Base()), Header: hdr, State: st, Types: types}, nil
}
