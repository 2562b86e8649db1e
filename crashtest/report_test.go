package crashtest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

// fakeT is a testing.TB whose Errorf is recorded instead of failing the
// test, for asserting on what crashtest reports when Options.Report is
// not set.
type fakeT struct {
	*testing.T
	errors []string
	logs   []string
}

func (f *fakeT) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *fakeT) Logf(format string, args ...any) {
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func TestReplayUnknownID(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"o1.e999", "replay id o1.e999 matches no crash state of this workload; the closest are o1.e"},
		{"o7.e2", "matches no crash state"},
		{"o1.e2.l1", "line l1 was not dirty at o1.e2, whose dirty lines are"},
		{"bogus", `replay id "bogus" is not of the form`},
	} {
		t.Run(tc.id, func(t *testing.T) {
			sum, fs := capture(t, tallyWorkload(false), &crashtest.Options{Replay: tc.id})
			require.Len(t, fs, 1, "a replay that matches nothing fails")
			assert.Equal(t, tc.id, fs[0].ID)
			assert.Contains(t, fs[0].Err.Error(), tc.want)
			assert.Zero(t, sum.Images)
		})
	}
}

// TestReplayLinesUnderAnyOptions replays an id with a line under
// LinesNone, which by itself never adds lines.
func TestReplayLinesUnderAnyOptions(t *testing.T) {
	_, fs := capture(t, tallyWorkload(true), nil)
	var withLine *crashtest.Failure
	for i := range fs {
		if len(fs[i].Lines) > 0 {
			withLine = &fs[i]
		}
	}
	require.NotNil(t, withLine, "a failure that needs a line: %v", fs)
	sum, again := capture(t, tallyWorkload(true), &crashtest.Options{Replay: withLine.ID, Lines: crashtest.LinesNone})
	require.Len(t, again, 1)
	assert.Equal(t, withLine.ID, again[0].ID)
	assert.Equal(t, withLine.Lines, again[0].Lines)
	assert.Equal(t, withLine.Err.Error(), again[0].Err.Error())
	assert.Equal(t, 1, sum.Images)
	assert.Contains(t, withLine.Replay, "go test ./crashtest -run '^TestReplayLinesUnderAnyOptions$' -crashtest.replay="+withLine.ID)
}

// TestReportsCapped checks that each distinct failure is reported once,
// at most MaxReports of them, followed by the count of the rest.
func TestReportsCapped(t *testing.T) {
	ft := &fakeT{T: t}
	w := crashtest.Workload{Setup: newMap, Ops: mapOps(false), Check: checkMap}
	sum := crashtest.Run(ft, w, &crashtest.Options{MaxReports: 3, Lines: crashtest.LinesSingle, Torn: true})
	require.Greater(t, len(sum.Failures), 3, "the unlogged bucket head fails many distinct states")
	require.Len(t, ft.errors, 4, "three failures and the count of the rest: %v", ft.errors)
	states, ids := 0, map[string]bool{}
	for _, f := range sum.Failures {
		assert.False(t, ids[f.ID], "%s reported twice", f.ID)
		ids[f.ID] = true
		assert.Positive(t, f.Count)
		states += f.Count
	}
	assert.Contains(t, ft.errors[3], fmt.Sprintf("%d more distinct failures", len(sum.Failures)-3))
	for i, f := range sum.Failures[:3] {
		assert.Contains(t, ft.errors[i], "crashtest: state "+f.ID)
		assert.Contains(t, ft.errors[i], "replay: go test ./crashtest -run '^TestReportsCapped$' -crashtest.replay="+f.ID)
		assert.FileExists(t, f.Image)
	}
	for _, f := range sum.Failures[3:] {
		assert.Empty(t, f.Image, "images are saved only for the failures shown")
	}
	assert.GreaterOrEqual(t, states, len(sum.Failures))
	assert.GreaterOrEqual(t, sum.Taken, sum.Images)
}

// TestImagesKept checks where failing images go: the test's temporary
// directory by default, the keep directory when asked.
func TestImagesKept(t *testing.T) {
	w := listWorkload(pushUnlogged)
	t.Run("temporary", func(t *testing.T) {
		ft := &fakeT{T: t}
		sum := crashtest.Run(ft, w, &crashtest.Options{Lines: crashtest.LinesSingle})
		require.NotEmpty(t, sum.Failures)
		f := sum.Failures[0]
		assert.False(t, f.Kept)
		assert.FileExists(t, f.Image)
		assert.NotContains(t, f.Image, "pmemgo-crashtest", "nothing outside the test's temporary directories")
		assert.Contains(t, ft.errors[0], "image: "+f.Image+" (removed when the test ends; -crashtest.keep=DIR keeps it)")
	})
	t.Run("kept", func(t *testing.T) {
		ft := &fakeT{T: t}
		dir := t.TempDir()
		sum := crashtest.Run(ft, w, &crashtest.Options{Lines: crashtest.LinesSingle, Keep: dir})
		require.NotEmpty(t, sum.Failures)
		f := sum.Failures[0]
		assert.True(t, f.Kept)
		assert.Equal(t, filepath.Join(dir, "TestImagesKept_kept", f.ID+".pool"), f.Image)
		assert.FileExists(t, f.Image)
		assert.Contains(t, ft.errors[0], "image kept: "+f.Image)
		entries, err := os.ReadDir(filepath.Dir(f.Image))
		require.NoError(t, err)
		assert.Len(t, entries, len(sum.Failures))
	})
}

// strayLen changes the list's length outside any transaction after a
// correct push: the store is never made durable.
func strayLen(h *heap.Heap, v uint64) error {
	if err := push(h, v); err != nil {
		return err
	}
	return h.View(func(tx *heap.Tx) error {
		l, err := heap.Root[List](tx)
		if err == nil {
			l.Len += 100
		}
		return err
	})
}

// TestLints checks that the not-durable lint names the object, type and
// field, and that the redundant-flush lint is opt-in.
func TestLints(t *testing.T) {
	w := listWorkload(strayLen)
	w.Ops = w.Ops[:1]
	w.Check = nil
	sum, _ := capture(t, w, &crashtest.Options{Lines: crashtest.LinesNone})
	require.NotEmpty(t, sum.Lint)
	assert.Regexp(t, `operation 0 \(push 1\) left 1 lines written but not durable, the first at pool offset \d+, slab \d+ object \d+ \(github.com/pmemgo/pmemgo/crashtest_test.List\) field Len`, sum.Lint[0])
	for _, l := range sum.Lint {
		assert.NotContains(t, l, "already durable")
	}
	sum, _ = capture(t, listWorkload(push), &crashtest.Options{Lines: crashtest.LinesNone, LintFlushes: true})
	assert.True(t, strings.Contains(strings.Join(sum.Lint, "\n"), "already durable"), "asked for: %v", sum.Lint)
}

// Split keeps two counters a cache line apart.
type Split struct {
	A   uint64
	_   [7]uint64
	B   uint64
	Pad [7]uint64
}

// TestStrayStoreInCheck checks that a Check storing into the pool outside
// a transaction is reported: the store would leak into the images
// checked after it.
func TestStrayStoreInCheck(t *testing.T) {
	root := func(tx *heap.Tx) (*Split, error) { return heap.Root[Split](tx) }
	w := crashtest.Workload{
		Setup: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error { _, err := root(tx); return err })
		},
		Check: func(h *heap.Heap, inFlight int) error {
			return h.View(func(tx *heap.Tx) error {
				s, err := root(tx)
				if err != nil {
					return err
				}
				s.B++ // a stray store: B's line is never flushed
				return nil
			})
		},
	}
	for range 3 {
		w.Ops = append(w.Ops, crashtest.Op{Name: "count", Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				s, err := root(tx)
				if err != nil {
					return err
				}
				return heap.Set(tx, &s.A, s.A+1)
			})
		}})
	}
	_, fs := capture(t, w, &crashtest.Options{Lines: crashtest.LinesSingle})
	require.NotEmpty(t, fs)
	assert.Equal(t, "stray-store", fs[0].ID, "reported first")
	assert.Regexp(t, `nothing flushed, at pool offset \d+, slab \d+ object \d+ \(github.com/pmemgo/pmemgo/crashtest_test.Split\) field B`, fs[0].Err.Error())
}

// TestSampling checks that a state space larger than the budget is
// sampled, repeatably, and that the summary says so.
func TestSampling(t *testing.T) {
	w := crashtest.Workload{Setup: newMap, Ops: mapOps(false), Check: checkMap}
	run := func() crashtest.Summary {
		sum, _ := capture(t, w, &crashtest.Options{MaxImages: 150, MaxReports: 1000})
		return sum
	}
	a, b := run(), run()
	assert.True(t, a.Sampled)
	assert.Contains(t, a.Coverage, "sampled:")
	assert.Contains(t, a.Coverage, "seed 0")
	assert.LessOrEqual(t, a.Images, 150)
	var ida, idb []string
	for _, f := range a.Failures {
		ida = append(ida, f.ID)
	}
	for _, f := range b.Failures {
		idb = append(idb, f.ID)
	}
	assert.NotEmpty(t, ida)
	assert.Equal(t, ida, idb, "the same seed samples the same states")
}

// TestWorkers checks that several workers find the same failures, with
// the same counts, in the same order, as one.
func TestWorkers(t *testing.T) {
	w := crashtest.Workload{Setup: newMap, Ops: mapOps(false), Check: checkMap}
	opts := &crashtest.Options{Lines: crashtest.LinesSingle, Torn: true, MaxReports: 1000}
	one, _ := capture(t, w, opts)
	opts.Workers = 2
	two, _ := capture(t, w, opts)
	require.NotEmpty(t, one.Failures)
	assert.Equal(t, one.Images, two.Images)
	require.Equal(t, len(one.Failures), len(two.Failures))
	for i := range one.Failures {
		assert.Equal(t, one.Failures[i].ID, two.Failures[i].ID)
		assert.Equal(t, one.Failures[i].Count, two.Failures[i].Count, one.Failures[i].ID)
	}
}
