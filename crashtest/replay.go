package crashtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// stateID returns the stable id of a crash state: the operation, the
// device event in it and the lines added, with their words when torn.
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

var idPattern = regexp.MustCompile(`^o(\d+)\.e(\d+)((?:\.l\d+(?:w[1-7])?)*)$`)
var linePattern = regexp.MustCompile(`l(\d+)(?:w([1-7]))?`)

// parsedID is a replay id taken apart.
type parsedID struct {
	op, event int
	lines     []Line
}

func parseID(id string) (parsedID, bool) {
	m := idPattern.FindStringSubmatch(id)
	if m == nil {
		return parsedID{}, false
	}
	var p parsedID
	p.op, _ = strconv.Atoi(m[1])
	p.event, _ = strconv.Atoi(m[2])
	for _, lm := range linePattern.FindAllStringSubmatch(m[3], -1) {
		l := Line{Words: 8}
		l.Index, _ = strconv.Atoi(lm[1])
		if lm[2] != "" {
			l.Words, _ = strconv.Atoi(lm[2])
		}
		p.lines = append(p.lines, l)
	}
	return p, true
}

// replay checks exactly the state id names, whatever the options, and
// reports a failure when it names no state, with the closest ids.
func (r *runner) replay(w *worker, id string) {
	s := w.s
	if _, ok := r.failures[id]; ok {
		// A refusal: recording the workload reproduced it.
		return
	}
	pid, ok := parseID(id)
	if !ok {
		r.add(&Failure{ID: id, Op: -1, Count: 1, Err: fmt.Errorf("replay id %q is not of the form o<op>.e<event> followed by .l<line> or .l<line>w<words> for each line", id)})
		return
	}
	for i := range r.points {
		p := &r.points[i]
		if p.op != pid.op || p.event != pid.event {
			continue
		}
		var missing []string
		for _, l := range pid.lines {
			if extraData(p, l.Index) == nil {
				missing = append(missing, fmt.Sprintf("l%d", l.Index))
			}
		}
		if len(missing) > 0 {
			r.add(&Failure{ID: id, Op: p.op, Count: 1, Err: fmt.Errorf("replay id %s: line %s was not dirty at o%d.e%d, whose dirty lines are %s",
				id, strings.Join(missing, ", "), p.op, p.event, dirtyList(p))})
			return
		}
		s.reset(r.rec.journal)
		s.advance(r.rec.journal, p.journal)
		r.sum.Taken, r.sum.Images = 1, 1
		r.sum.Coverage = "replay of " + id
		if err := r.checkVariant(w, p, pid.lines); err != nil {
			f := &Failure{ID: id, Op: p.op, Lines: pid.lines, Err: err, Count: 1, Replay: r.replayCommand(id)}
			f.Image, f.Kept = r.save(s.image(p, pid.lines), id)
			r.add(f)
		}
		return
	}
	r.add(&Failure{ID: id, Op: pid.op, Count: 1, Err: fmt.Errorf("replay id %s matches no crash state of this workload; the closest are %s",
		id, strings.Join(r.closest(pid, 5), ", "))})
}

func dirtyList(p *point) string {
	if len(p.extras) == 0 {
		return "none"
	}
	var ls []string
	for _, e := range p.extras {
		ls = append(ls, fmt.Sprintf("l%d", e.line))
	}
	return strings.Join(ls, ", ")
}

// closest returns the ids of the n points nearest to pid: in the same
// operation first, then by event.
func (r *runner) closest(pid parsedID, n int) []string {
	type cand struct {
		id   string
		dist int
	}
	var cs []cand
	abs := func(x int) int { return max(x, -x) }
	for i := range r.points {
		p := &r.points[i]
		cs = append(cs, cand{stateID(p, nil), abs(p.op-pid.op)<<20 + abs(p.event-pid.event)})
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return a.dist - b.dist })
	var ids []string
	for _, c := range cs[:min(n, len(cs))] {
		ids = append(ids, c.id)
	}
	if len(ids) == 0 {
		return []string{"(none: the workload has no crash points)"}
	}
	return ids
}

// callerPackage returns the directory of the test calling Run relative to
// the module root, "./crashtest", for the replay command; "" when it
// cannot tell.
func callerPackage() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		fr, more := frames.Next()
		if strings.HasSuffix(fr.File, "_test.go") {
			return relToModule(filepath.Dir(fr.File))
		}
		if !more {
			return ""
		}
	}
}

func relToModule(dir string) string {
	for root := dir; ; {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			rel, err := filepath.Rel(root, dir)
			if err != nil {
				return ""
			}
			if rel == "." {
				return "."
			}
			return "./" + filepath.ToSlash(rel)
		}
		up := filepath.Dir(root)
		if up == root {
			return ""
		}
		root = up
	}
}
