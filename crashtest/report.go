package crashtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// fail shrinks a failing variant to a smallest failing line set and
// counts it under its id.
func (r *runner) fail(w *worker, p *point, v []Line, err error) {
	v, err = r.shrink(w, p, v, err)
	id := stateID(p, v)
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.failures[id]; ok {
		f.Count++
		return
	}
	r.add(&Failure{ID: id, Op: p.op, Lines: v, Err: err, Count: 1, Replay: r.replayCommand(id)})
}

// refuse records an operation the engine refused, or a Setup that
// failed (op -1).
func (r *runner) refuse(op int, err error) {
	id := fmt.Sprintf("o%d", op)
	if op < 0 {
		id = "setup"
	}
	r.add(&Failure{ID: id, Op: op, Err: err, Count: 1, Replay: r.replayCommand(id)})
}

func (r *runner) add(f *Failure) {
	r.failures[f.ID] = f
	r.order = append(r.order, f.ID)
}

// shrink drops lines from a failing set one at a time while it still
// fails, down to none when the durable state fails by itself, then tears
// each line that is left to the fewest words that still fail, so that
// the many states one bug fails are reported as a few smallest ones.
func (r *runner) shrink(w *worker, p *point, v []Line, err error) ([]Line, error) {
	for changed := true; changed && len(v) > 0; {
		changed = false
		for i := range v {
			smaller := append(append([]Line(nil), v[:i]...), v[i+1:]...)
			if e := r.checkVariant(w, p, smaller); e != nil {
				v, err, changed = smaller, e, true
				break
			}
		}
	}
	for i := range v {
		for words := 1; words < v[i].Words; words++ {
			torn := append([]Line(nil), v...)
			torn[i].Words = words
			if e := r.checkVariant(w, p, torn); e != nil {
				v, err = torn, e
				break
			}
		}
	}
	return v, err
}

// report hands the first MaxReports distinct failures to Options.Report
// or t.Errorf, each once, says how many more there are, and returns them
// all.
func (r *runner) report() []Failure {
	// In the order of the states, which does not depend on how many
	// workers found them.
	slices.SortStableFunc(r.order, func(a, b string) int {
		oa, ob := stateOrder(a), stateOrder(b)
		if oa != ob || oa < 0 {
			return oa - ob
		}
		return strings.Compare(a, b)
	})
	all := make([]Failure, len(r.order))
	for i, id := range r.order {
		all[i] = *r.failures[id]
	}
	shown := all[:min(len(all), r.o.MaxReports)]
	r.saveImages(shown)
	for _, f := range shown {
		if r.o.Report != nil {
			r.o.Report(f)
		} else {
			r.t.Errorf("%s", r.describe(&f))
		}
	}
	if rest := all[len(shown):]; len(rest) > 0 {
		states := 0
		for _, f := range rest {
			states += f.Count
		}
		msg := fmt.Sprintf("crashtest: %d more distinct failures (%d states) not shown; Summary.Failures lists them all", len(rest), states)
		if r.o.Report != nil && r.o.Logf != nil {
			r.o.Logf("%s", msg)
		} else if r.o.Report != nil {
			r.t.Logf("%s", msg)
		} else {
			r.t.Errorf("%s", msg)
		}
	}
	return all
}

// stateOrder orders failure ids by operation and event; ids that name no
// state (refusals, stray stores) come first, in the order found.
func stateOrder(id string) int {
	p, ok := parseID(id)
	if !ok {
		return -1
	}
	return p.op<<20 + p.event
}

// describe is the report of one failure.
func (r *runner) describe(f *Failure) string {
	var b strings.Builder
	if _, ok := parseID(f.ID); !ok || f.Replay == "" {
		fmt.Fprintf(&b, "crashtest: %v", f.Err)
	} else {
		what := "crash in operation"
		if r.isEnd(f) {
			what = "state after operation"
		}
		fmt.Fprintf(&b, "crashtest: state %s (%s %d, %s", f.ID, what, f.Op, r.opName(f.Op))
		if f.Count > 1 {
			fmt.Fprintf(&b, "; %d states shrink to it", f.Count)
		}
		fmt.Fprintf(&b, "): %v", f.Err)
	}
	if f.Replay != "" {
		fmt.Fprintf(&b, "\n\treplay: %s", f.Replay)
	}
	switch {
	case f.Image == "":
	case f.Kept:
		fmt.Fprintf(&b, "\n\timage kept: %s", f.Image)
	default:
		fmt.Fprintf(&b, "\n\timage: %s (removed when the test ends; -crashtest.keep=DIR keeps it)", f.Image)
	}
	return b.String()
}

// isEnd reports whether f is at the point after its operation's last
// event.
func (r *runner) isEnd(f *Failure) bool {
	for i := range r.points {
		p := &r.points[i]
		if p.end && p.op == f.Op && strings.HasPrefix(f.ID+".", fmt.Sprintf("o%d.e%d.", p.op, p.event)) {
			return true
		}
	}
	return false
}

// saveImages saves the images of the failing states in fs, in order, by
// rebuilding each in the first worker's scratch.
func (r *runner) saveImages(fs []Failure) {
	s := r.workers[0].s
	s.reset(r.rec.journal)
	for i := range fs {
		f := &fs[i]
		pid, ok := parseID(f.ID)
		if !ok || f.Image != "" {
			continue
		}
		for j := range r.points {
			p := &r.points[j]
			if p.op == pid.op && p.event == pid.event {
				s.advance(r.rec.journal, p.journal)
				f.Image, f.Kept = r.save(s.image(p, f.Lines), f.ID)
				r.failures[f.ID].Image, r.failures[f.ID].Kept = f.Image, f.Kept
				break
			}
		}
	}
}

// save writes a failing image, in the test's temporary directory or in
// the directory asked to keep images in, and returns its path.
func (r *runner) save(img []byte, id string) (string, bool) {
	dir, kept := filepath.Join(r.dir, "failed"), false
	if r.o.Keep != "" {
		dir, kept = filepath.Join(r.o.Keep, sanitize(r.t.Name())), true
	}
	path := filepath.Join(dir, id+".pool")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(path, img, 0o600)
	}
	if err != nil {
		return fmt.Sprintf("(not saved: %v)", err), false
	}
	return path, kept
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func sanitize(name string) string { return unsafeChars.ReplaceAllString(name, "_") }

// replayCommand is the go test command, run from the module root, that
// checks only state id of the running test.
func (r *runner) replayCommand(id string) string {
	parts := strings.Split(r.t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	pkg := ""
	if r.pkg != "" {
		pkg = r.pkg + " "
	}
	return fmt.Sprintf("go test %s-run '%s' -crashtest.replay=%s", pkg, strings.Join(parts, "/"), id)
}
