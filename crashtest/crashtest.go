// Package crashtest enumerates the states a crash can leave a pool in,
// from go test, so that users can show that their own persistent data
// structures survive a crash at any instant.
//
// Run executes a Workload on the emulated device: a setup, a sequence of
// operations, the user's recovery step and a check. It takes a crash
// image at every fence (and, as an option, every flush) of the operations:
// what the device had made durable, plus optionally subsets of the cache
// lines written but not yet durable, whole or torn into 8-byte pieces.
// Each distinct image is recovered at a relocated base (undo rollback,
// swizzle, then the user's recovery), checked by the offline checker and
// by the workload's Check, which is told which operation was in flight so
// that it can accept the state before or after it.
//
// A failure is reported with t.Errorf, a stable id and the command that
// replays exactly that state:
//
//	go test -run '^TestList$' -crashtest.replay=o1.e12.l4170
//
// Its line set is shrunk to a smallest failing one first, and its image is
// saved so that pmemctl can inspect it.
//
// Images are built incrementally in one scratch file: moving from one crash
// point to the next writes only the lines that differ, never the whole pool.
//
// Two complete examples come with the package's tests. list_test.go keeps a
// persistent linked list; its push logs the list header with heap.Add
// before changing it, and TestListCorrect shows crashtest passing it, while
// pushUnlogged changes the length without logging it and TestListBroken
// shows crashtest catching that. hashmap_test.go does the same for a small
// chained hash map whose broken put links a new entry into its bucket
// without logging the bucket head. A workload looks like this:
//
//	w := crashtest.Workload{
//		Setup: func(h *heap.Heap) error { return push(h, 0) },
//		Ops: []crashtest.Op{
//			{Name: "push 1", Run: func(h *heap.Heap) error { return push(h, 1) }},
//		},
//		Check: func(h *heap.Heap, inFlight int) error {
//			// accept the list before or after Ops[inFlight]
//		},
//	}
//	crashtest.Run(t, w, &crashtest.Options{Lines: crashtest.LinesSingle, Torn: true})
package crashtest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

var replayFlag = flag.String("crashtest.replay", "", "check only the crash state with this id")

// Op is one operation of a workload, typically one heap.Update.
type Op struct {
	Name string
	Run  func(h *heap.Heap) error
	// relocate marks the operation made by Relocate.
	relocate bool
}

// Relocate returns an operation that closes the pool and opens it again
// at a new base, so that the crash points of closing, opening and
// swizzling are enumerated too.
func Relocate() Op { return Op{Name: "relocate", relocate: true} }

// Workload is what Run exercises.
type Workload struct {
	// Size of the pool; 0 means 2 MiB. SlabSize and LogSize as in
	// heap.Options.
	Size, SlabSize, LogSize int64
	// Setup builds the initial state; its crash points are not taken.
	Setup func(h *heap.Heap) error
	// Ops run in order; a crash is injected inside each of them.
	Ops []Op
	// Recover is the user's recovery step, run on every recovered image
	// after pmemgo's own recovery. It may use Update; nothing it writes
	// reaches the image file.
	Recover func(h *heap.Heap) error
	// Check inspects a recovered image. inFlight is the index in Ops of the
	// operation the crash interrupted: the state must be the one before it
	// or the one after it.
	Check func(h *heap.Heap, inFlight int) error
}

// LineMode says which not-yet-durable lines are added to a crash image.
type LineMode int

const (
	// LinesNone takes strictly what is durable.
	LinesNone LineMode = iota
	// LinesSingle adds, in turn, each single dirty line.
	LinesSingle
	// LinesUpTo adds every subset of at most Options.K dirty lines.
	LinesUpTo
	// LinesAll adds every subset of the dirty lines when there are at most
	// Options.K of them, and falls back to LinesUpTo otherwise.
	LinesAll
	// LinesRandom adds Options.Samples random subsets, seeded by Seed.
	LinesRandom
)

// Options tunes Run. The zero value takes a crash at every fence with
// nothing beyond what is durable.
type Options struct {
	// Flushes takes a crash at every flush too, not only at fences.
	Flushes bool
	Lines   LineMode
	K       int
	Samples int
	Seed    int64
	// Torn adds, for each single added line, the images in which only its
	// first 1 to 7 eight-byte words reached the media.
	Torn bool
	// MaxImages and MaxTime bound the images checked; 0 means 20000 images
	// and 2 minutes, or 2000 and 15 seconds under testing.Short.
	MaxImages int
	MaxTime   time.Duration
	// Report receives each failure instead of t.Errorf; tests of broken
	// structures use it to assert that crashtest finds them.
	Report func(Failure)
	// Logf receives the summary and lint lines instead of t.Logf.
	Logf func(format string, args ...any)
}

// Failure is a crash state whose recovery or check failed.
type Failure struct {
	ID string
	// Op is the operation in flight; Lines the non-durable lines added
	// (after shrinking), each with the words that reached the media.
	Op    int
	Lines []Line
	Err   error
	// Image is the path of the saved crash image.
	Image string
	// Replay is the command that checks exactly this state again.
	Replay string
}

// Line is a cache line added to a crash image: its index, and how many of
// its eight words reached the media (8 for the whole line).
type Line struct {
	Index int
	Words int
}

// Summary is what Run did.
type Summary struct {
	CrashPoints int
	Images      int // images checked, identical ones once
	Failures    []Failure
	Lint        []string
	// Elapsed is the wall time of Run; Checking the part spent building
	// and checking images.
	Elapsed, Checking time.Duration
	// Truncated is set when the budget ran out before every image was
	// checked.
	Truncated bool
}

// Run executes w, enumerates its crash states and checks each one. It
// reports failures through t (or opts.Report) and returns a summary.
func Run(t testing.TB, w Workload, opts *Options) Summary {
	t.Helper()
	o := defaults(opts)
	r := &runner{t: t, w: w, o: o, dir: t.TempDir(), start: time.Now()}
	if err := r.record(); err != nil {
		t.Fatalf("crashtest: running the workload: %v", err)
	}
	scr, err := r.newScratch()
	if err != nil {
		t.Fatalf("crashtest: scratch image: %v", err)
	}
	defer scr.f.Close()
	t0 := time.Now()
	r.checkAll(scr)
	sum := r.sum
	sum.Checking = time.Since(t0)
	sum.CrashPoints = len(r.points)
	sum.Lint = r.lint
	sum.Elapsed = time.Since(r.start)
	logf := o.Logf
	if logf == nil {
		logf = t.Logf
	}
	for _, l := range sum.Lint {
		logf("crashtest lint: %s", l)
	}
	trunc := ""
	if sum.Truncated {
		trunc = " (budget exhausted)"
	}
	logf("crashtest: %d crash points, %d images checked, %d distinct, %d failures, %v%s",
		sum.CrashPoints, r.taken, sum.Images, len(sum.Failures), sum.Elapsed.Round(time.Millisecond), trunc)
	return sum
}

func defaults(opts *Options) Options {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.K <= 0 {
		o.K = 2
	}
	if o.Samples <= 0 {
		o.Samples = 16
	}
	if o.MaxImages <= 0 {
		o.MaxImages = 20000
		if testing.Short() {
			o.MaxImages = 2000
		}
	}
	if o.MaxTime <= 0 {
		o.MaxTime = 2 * time.Minute
		if testing.Short() {
			o.MaxTime = 15 * time.Second
		}
	}
	return o
}

// runner holds one Run's state.
type runner struct {
	t     testing.TB
	w     Workload
	o     Options
	dir   string
	start time.Time
	emu   *device.Emulator
	rec   recorder
	// points are the crash points taken, in order.
	points []point
	lint   []string
	taken  int
	sum    Summary
}

// record runs the workload once on the emulated device, taking the crash
// points.
func (r *runner) record() error {
	path := filepath.Join(r.dir, "pool")
	size := r.w.Size
	if size == 0 {
		size = 2 << 20
	}
	opts := &heap.Options{Size: size, SlabSize: r.w.SlabSize, LogSize: r.w.LogSize}
	h, err := heap.Open(path, opts)
	if err != nil {
		return err
	}
	if r.w.Setup != nil {
		if err := r.w.Setup(h); err != nil {
			h.Close()
			return fmt.Errorf("setup: %w", err)
		}
	}
	if err := h.Close(); err != nil {
		return err
	}
	initial, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r.rec = recorder{r: r, initial: initial, op: -1}
	r.emu = &device.Emulator{Hook: r.rec.hook}
	opts.Device = r.emu
	if h, err = heap.Open(path, opts); err != nil {
		return err
	}
	for i, op := range r.w.Ops {
		r.rec.begin(i)
		if op.relocate {
			err = h.Close()
			if err == nil {
				h, err = heap.Open(path, &heap.Options{Device: r.emu, ForceRelocate: true})
			}
		} else {
			err = op.Run(h)
		}
		r.rec.end(h)
		if err != nil {
			return fmt.Errorf("operation %d (%s): %w", i, op.Name, err)
		}
	}
	r.rec.begin(-1)
	return h.Close()
}

// replayID returns the replay flag, trimmed.
func replayID() string { return strings.TrimSpace(*replayFlag) }
