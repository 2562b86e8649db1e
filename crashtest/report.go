package crashtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// fail shrinks a failing variant to a smallest failing line set, saves its
// image and reports it.
func (r *runner) fail(s *scratch, p *point, v []Line, err error) {
	v, err = r.shrink(s, p, v, err)
	id := stateID(p, v)
	f := Failure{ID: id, Op: p.op, Lines: v, Err: err, Replay: replayCommand(r.t.Name(), id)}
	f.Image = r.save(s, p, v, id)
	r.sum.Failures = append(r.sum.Failures, f)
	if r.o.Report != nil {
		r.o.Report(f)
		return
	}
	name := "?"
	if p.op >= 0 && p.op < len(r.w.Ops) {
		name = r.w.Ops[p.op].Name
	}
	r.t.Errorf("crashtest: state %s (crash in operation %d, %s): %v\n\treplay: %s\n\timage:  %s",
		id, p.op, name, err, f.Replay, f.Image)
}

// shrink drops lines from a failing set one at a time while it still
// fails, so that what is reported is a smallest failing set.
func (r *runner) shrink(s *scratch, p *point, v []Line, err error) ([]Line, error) {
	for changed := true; changed && len(v) > 1; {
		changed = false
		for i := range v {
			smaller := append(append([]Line(nil), v[:i]...), v[i+1:]...)
			if e := r.checkVariant(s, p, smaller); e != nil {
				v, err, changed = smaller, e, true
				break
			}
		}
	}
	return v, err
}

// save writes the failing image where it outlives the test, for pmemctl
// or a debugger, and returns its path.
func (r *runner) save(s *scratch, p *point, v []Line, id string) string {
	dir := filepath.Join(os.TempDir(), "pmemgo-crashtest", sanitize(r.t.Name()))
	path := filepath.Join(dir, id+".pool")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = s.apply(p, v)
	}
	if err == nil {
		var img []byte
		if img, err = os.ReadFile(s.path); err == nil {
			err = os.WriteFile(path, img, 0o600)
		}
	}
	if rerr := s.restore(v); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Sprintf("(not saved: %v)", err)
	}
	return path
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func sanitize(name string) string { return unsafeChars.ReplaceAllString(name, "_") }

// replayCommand is the go test command that checks only state id of the
// named test.
func replayCommand(test, id string) string {
	parts := strings.Split(test, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return fmt.Sprintf("go test -run '%s' -crashtest.replay=%s", strings.Join(parts, "/"), id)
}
