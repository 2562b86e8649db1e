package crashtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// scratch is the one file every image is built in. It holds the durable
// state of the current point (replay) with a variant's lines on top.
type scratch struct {
	path   string
	f      *os.File
	replay []byte // durable state at the current point
	next   int    // journal entries applied to replay
}

func (r *runner) newScratch() (*scratch, error) {
	s := &scratch{path: filepath.Join(r.dir, "image"), replay: append([]byte(nil), r.rec.initial...)}
	if err := os.WriteFile(s.path, s.replay, 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	s.f = f
	return s, err
}

// advance brings the durable state to journal prefix n, writing only the
// lines that change.
func (s *scratch) advance(journal []lineData, n int) error {
	for ; s.next < n; s.next++ {
		e := &journal[s.next]
		off := e.line * device.LineSize
		copy(s.replay[off:], e.data[:])
		if err := s.writeLine(e.line, s.replay[off:off+device.LineSize]); err != nil {
			return err
		}
	}
	return nil
}

func (s *scratch) writeLine(line int, b []byte) error {
	_, err := s.f.WriteAt(b, int64(line*device.LineSize))
	return err
}

// apply puts a variant's lines on top of the durable state; restore takes
// them off again.
func (s *scratch) apply(p *point, v []Line) error {
	for _, l := range v {
		off := l.Index * device.LineSize
		var b [device.LineSize]byte
		copy(b[:], s.replay[off:])
		copy(b[:l.Words*8], extraData(p, l.Index))
		if err := s.writeLine(l.Index, b[:]); err != nil {
			return err
		}
	}
	return nil
}

func (s *scratch) restore(v []Line) error {
	for _, l := range v {
		off := l.Index * device.LineSize
		if err := s.writeLine(l.Index, s.replay[off:off+device.LineSize]); err != nil {
			return err
		}
	}
	return nil
}

func extraData(p *point, line int) []byte {
	for i := range p.extras {
		if p.extras[i].line == line {
			return p.extras[i].data[:]
		}
	}
	return nil
}

// checkAll checks every crash point's variants, each distinct image once,
// within the budget.
func (r *runner) checkAll(s *scratch) {
	replay := replayID()
	seen := map[uint64]bool{}
	for i := range r.points {
		p := &r.points[i]
		if err := s.advance(r.rec.journal, p.journal); err != nil {
			r.t.Fatalf("crashtest: scratch image: %v", err)
		}
		variants := r.variants(i)
		if replay != "" {
			variants = replayVariants(p, replay)
		}
		for _, v := range variants {
			r.taken++
			key := imageKey(p, v)
			if seen[key] {
				continue
			}
			seen[key] = true
			if r.sum.Images >= r.o.MaxImages || time.Since(r.start) > r.o.MaxTime {
				r.sum.Truncated = true
				return
			}
			r.sum.Images++
			if err := r.checkVariant(s, p, v); err != nil {
				r.fail(s, p, v, err)
			}
		}
	}
}

// imageKey identifies an image: the durable prefix and the lines on top.
func imageKey(p *point, v []Line) uint64 {
	var d xxhash.Digest
	d.Reset()
	fmt.Fprintf(&d, "%d", p.journal)
	for _, l := range v {
		fmt.Fprintf(&d, ",%d:%d:", l.Index, l.Words)
		d.Write(extraData(p, l.Index)[:l.Words*8])
	}
	return d.Sum64()
}

func (r *runner) checkVariant(s *scratch, p *point, v []Line) error {
	if err := s.apply(p, v); err != nil {
		return err
	}
	err := r.checkImage(s.path, p.op)
	return errors.Join(err, s.restore(v))
}

// checkImage checks the image in path as a reopen after the crash would
// see it: the offline checker first, then pmemgo's recovery at a new base,
// then the user's recovery and check. Nothing is written to the file: the
// pool is opened on a private mapping.
func (r *runner) checkImage(path string, op int) (err error) {
	var problems []string
	err = recovery.CheckFile(path, func(p recovery.Problem) bool {
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
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	h, err := heap.Open(path, &heap.Options{Device: device.Private{}, ForceRelocate: true})
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer h.Close()
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

// variants lists the line sets to add at point i, the empty set first.
func (r *runner) variants(i int) [][]Line {
	p := &r.points[i]
	out := [][]Line{nil}
	n := len(p.extras)
	whole := func(idx ...int) []Line {
		v := make([]Line, len(idx))
		for k, j := range idx {
			v[k] = Line{Index: p.extras[j].line, Words: 8}
		}
		return v
	}
	switch mode := r.o.Lines; {
	case n == 0 || mode == LinesNone:
	case mode == LinesSingle:
		for j := range n {
			out = append(out, whole(j))
		}
	case mode == LinesAll && n <= 10:
		for mask := 1; mask < 1<<n; mask++ {
			var idx []int
			for j := range n {
				if mask&(1<<j) != 0 {
					idx = append(idx, j)
				}
			}
			out = append(out, whole(idx...))
		}
	case mode == LinesUpTo || mode == LinesAll:
		out = append(out, subsetsUpTo(n, r.o.K, whole)...)
	case mode == LinesRandom:
		rng := rand.New(rand.NewPCG(uint64(r.o.Seed), uint64(i)))
		for range r.o.Samples {
			var idx []int
			for j := range n {
				if rng.IntN(2) == 1 {
					idx = append(idx, j)
				}
			}
			out = append(out, whole(idx...))
		}
	}
	if r.o.Torn {
		for j := range n {
			for w := 1; w < 8; w++ {
				out = append(out, []Line{{Index: p.extras[j].line, Words: w}})
			}
		}
	}
	return out
}

// subsetsUpTo returns every non-empty subset of [0, n) with at most k
// members, built by whole.
func subsetsUpTo(n, k int, whole func(...int) []Line) [][]Line {
	var out [][]Line
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) > 0 {
			out = append(out, whole(cur...))
		}
		if len(cur) == k {
			return
		}
		for j := start; j < n; j++ {
			rec(j+1, append(cur, j))
		}
	}
	rec(0, nil)
	return out
}

// ID returns the stable id of a crash state: the operation, the device
// event and the lines added, with their words when torn.
func stateID(p *point, v []Line) string {
	var b strings.Builder
	fmt.Fprintf(&b, "o%d.e%d", p.op, p.event)
	for _, l := range v {
		fmt.Fprintf(&b, ".l%d", l.Index)
		if l.Words < 8 {
			fmt.Fprintf(&b, "w%d", l.Words)
		}
	}
	return b.String()
}

var idPart = regexp.MustCompile(`^l(\d+)(?:w([1-8]))?$`)

// replayVariants returns the one variant a replay id names, if it is at p.
func replayVariants(p *point, id string) [][]Line {
	parts := strings.Split(id, ".")
	if len(parts) < 2 || parts[0] != fmt.Sprintf("o%d", p.op) || parts[1] != fmt.Sprintf("e%d", p.event) {
		return nil
	}
	var v []Line
	for _, part := range parts[2:] {
		m := idPart.FindStringSubmatch(part)
		if m == nil {
			return nil
		}
		idx, _ := strconv.Atoi(m[1])
		words := 8
		if m[2] != "" {
			words, _ = strconv.Atoi(m[2])
		}
		if extraData(p, idx) == nil {
			return nil
		}
		v = append(v, Line{Index: idx, Words: words})
	}
	return [][]Line{v}
}
