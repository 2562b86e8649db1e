// Package crashtest enumerates the states a crash can leave a pool in,
// from go test, so that users can show that their own persistent data
// structures survive a crash at any instant.
//
// Run executes a Workload on the emulated device: a setup, a sequence of
// operations, the user's recovery step and a check. It takes a crash
// point before every fence of the operations (and every flush, by default
// or with Options.Flushes), and one after each operation's last event,
// which is how the state each operation leaves is checked, the final
// state included. At each point the image is what
// the device had made durable, plus subsets of the cache lines written
// but not yet durable, whole or torn into 8-byte pieces. Each distinct
// image is checked as a reopen after the crash would see it: by the
// offline checker, by the reachability walk of pmemctl check --leaks (an
// allocated object nothing leads to is a leak, named by type, slab and
// object; Options.AllowLeaks turns this off), then recovered at a new
// base (undo rollback, swizzle, the workload's Recover) and given to the
// workload's Check, which is told which operation was in flight so that
// it can accept the state before or after it.
//
// With zero Options, Run explores the strongest tier that fits its budget
// (Options.MaxImages): what is durable at every point, then every single
// dirty line, then every torn line, then sets of several lines. When a
// tier does not fit, it checks a sample of it, drawn with a fixed seed so
// that a run is repeatable, and its summary line says what it covered and
// what it sampled.
//
// Each distinct failure is reported once, with t.Errorf (or
// Options.Report), after its line set was shrunk to a smallest failing
// one, with the number of states it stands for, a stable id and the
// command that replays exactly that state from the module root:
//
//	go test ./crashtest -run '^TestList$' -crashtest.replay=o1.e12.l4170
//
// At most Options.MaxReports are shown; the count of the rest follows. An
// id names the operation, the event in it (flushes and fences counted from
// the operation's start) and the lines added, so it depends neither on
// where the pool was mapped nor on Setup; a replay checks its state under
// any options, and an id that matches no state fails, naming the closest.
// The image of a shown failure is saved in the test's temporary directory,
// removed when the test ends, or kept under -crashtest.keep=DIR.
//
// When the engine refuses an operation (a double free, say), that is
// reported as a failure of the operation, id "o<op>", and the states
// before it are still explored.
//
// Images are built in memory: moving from one image to the next writes
// only the lines that differ, and the pools checked reuse mappings instead
// of making new ones.
//
// Setup runs on the same open of the pool as the operations, but its
// crash points are not taken. Recover and Check run on a different open,
// of each crash image: Go pointers into the pool kept from Setup or the
// operations are not valid there. They may write only through
// transactions: a store outside one would reach the images checked after
// it, and is reported as a failure with id "stray-store".
//
// Two complete examples come with the package's tests. list_test.go keeps a
// persistent linked list; its push logs the list header with heap.Add
// before changing it, and TestListCorrect shows crashtest passing it, while
// pushUnlogged changes the length without logging it and TestListBroken
// shows crashtest catching that. hashmap_test.go does the same for a small
// chained hash map whose broken put links a new entry into its bucket
// without logging the bucket head, and planted_test.go holds a structure
// for each kind of bug crashtest finds with zero Options. A workload looks
// like this:
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
//	crashtest.Run(t, w, nil)
package crashtest

import (
	"flag"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

var (
	replayFlag = flag.String("crashtest.replay", "", "check only the crash state with this id")
	keepFlag   = flag.String("crashtest.keep", "", "keep the images of failing states in this directory")
)

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
	// Setup builds the initial state; its crash points are not taken. It
	// runs on the same open of the pool as Ops.
	Setup func(h *heap.Heap) error
	// Ops run in order; a crash is injected inside each of them.
	Ops []Op
	// Recover is the user's recovery step, run on every recovered image
	// after pmemgo's own recovery. It may use Update; nothing it writes
	// reaches the image.
	Recover func(h *heap.Heap) error
	// Check inspects a recovered image. inFlight is the index in Ops of the
	// operation the crash interrupted: the state must be the one before it
	// or the one after it. The state an operation leaves is checked with
	// inFlight set to that operation.
	Check func(h *heap.Heap, inFlight int) error
}

// LineMode says which not-yet-durable lines are added to a crash image.
type LineMode int

const (
	// LinesAuto, the zero value, explores the strongest tier that fits the
	// budget: nothing beyond what is durable, each single dirty line whole,
	// then torn, then sets of several lines (all of them when a point has
	// at most ten dirty lines, else every pair and Options.Samples random
	// sets), sampling a tier with Options.Seed when it does not fit. It
	// takes crash points at flushes too.
	LinesAuto LineMode = iota
	// LinesNone takes strictly what is durable.
	LinesNone
	// LinesSingle adds, in turn, each single dirty line.
	LinesSingle
	// LinesUpTo adds every subset of at most Options.K dirty lines.
	LinesUpTo
	// LinesAll adds every subset of the dirty lines when there are at most
	// ten of them, and falls back to LinesUpTo otherwise.
	LinesAll
	// LinesRandom adds Options.Samples random subsets, seeded by Seed.
	LinesRandom
)

// Options tunes Run. The zero value is the strongest exploration that
// fits the default budget (LinesAuto), with leaks reported.
type Options struct {
	// Flushes takes a crash at every flush too, not only at fences;
	// LinesAuto always does.
	Flushes bool
	Lines   LineMode
	// K bounds the sets of LinesUpTo (default 2); Samples is the number of
	// random sets of LinesRandom and of LinesAuto's last tier (default
	// 16); Seed seeds every random choice.
	K       int
	Samples int
	Seed    int64
	// Torn adds, for each single added line, the images in which only its
	// first 1 to 7 eight-byte words reached the media. LinesAuto always
	// does.
	Torn bool
	// AllowLeaks turns off the reachability check, for workloads that
	// leave unreachable objects on purpose.
	AllowLeaks bool
	// Replay checks only the state with this id, as -crashtest.replay
	// does; the flag wins when both are set.
	Replay string
	// Keep is the directory failing images are kept in, as
	// -crashtest.keep does; the flag wins when both are set.
	Keep string
	// MaxImages and MaxTime bound the images checked; 0 means 10000 images
	// and 2 minutes, or 2000 and 20 seconds under testing.Short. The
	// durable state at every crash point is checked whatever MaxImages
	// says; the tiers after it share what is left.
	MaxImages int
	MaxTime   time.Duration
	// Workers is the number of goroutines checking images; 0 means one.
	// With more, Recover and Check run concurrently, each on a pool of
	// its own, and must be safe for that.
	Workers int
	// MaxReports bounds the distinct failures shown; 0 means 20.
	MaxReports int
	// LintFlushes adds a lint line for every operation that flushed lines
	// that were durable already.
	LintFlushes bool
	// Buffered runs the workload on a device with the semantics of
	// device.Buffered instead of persistent memory's: stores reach the
	// media only through flushes, and the heap runs the protocol it runs
	// there (one fence per small commit, ranges written back after the
	// commit record). Use it to test a structure for pools opened with
	// device.Buffered.
	Buffered bool
	// Report receives each distinct failure shown, instead of t.Errorf;
	// tests of broken structures use it to assert that crashtest finds
	// them.
	Report func(Failure)
	// Logf receives the summary and lint lines instead of t.Logf.
	Logf func(format string, args ...any)
}

// Failure is a crash state whose recovery or check failed, or an
// operation the engine refused.
type Failure struct {
	ID string
	// Op is the operation in flight; Lines the non-durable lines added
	// (after shrinking), each with the words that reached the media.
	Op    int
	Lines []Line
	Err   error
	// Count is the number of states checked that shrank to this one.
	Count int
	// Image is the path of the saved crash image: in the test's temporary
	// directory, or under -crashtest.keep when Kept is set. Empty for a
	// refusal.
	Image string
	Kept  bool
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
	// Images counts the distinct images checked; Taken every image taken,
	// duplicates included.
	Images, Taken int
	// Failures are the distinct failures, each once, in the order found.
	Failures []Failure
	Lint     []string
	// Coverage says what was explored in full and what was sampled.
	Coverage string
	// Sampled is set when a tier was only sampled.
	Sampled bool
	// Elapsed is the wall time of Run; Checking the part spent building
	// and checking images.
	Elapsed, Checking time.Duration
	// Truncated is set when the time budget ran out before every planned
	// image was checked.
	Truncated bool
}

// Run executes w, enumerates its crash states and checks each one. It
// reports failures through t (or opts.Report) and returns a summary. It
// calls t.Fatalf only when it cannot work at all (no pool can be made).
func Run(t testing.TB, w Workload, opts *Options) Summary {
	t.Helper()
	o := defaults(opts)
	r := &runner{t: t, w: w, o: o, dir: t.TempDir(), start: time.Now(), pkg: callerPackage()}
	r.failures = map[string]*Failure{}
	if err := r.record(); err != nil {
		t.Fatalf("crashtest: running the workload: %v", err)
	}
	for range max(1, r.o.Workers) {
		w, err := newWorker(r.rec.initial)
		if err != nil {
			t.Fatalf("crashtest: scratch image: %v", err)
		}
		defer w.close()
		r.workers = append(r.workers, w)
	}
	t0 := time.Now()
	r.checkAll()
	var strays []string
	for _, w := range r.workers {
		strays = append(strays, w.m.strays...)
	}
	if len(strays) > 0 {
		// First, since it may explain the failures found before it.
		r.add(&Failure{ID: "stray-store", Op: -1, Count: 1, Err: fmt.Errorf(
			"a store into an image that nothing flushed, at %s: the workload's Recover or Check wrote outside a transaction (or the engine wrote without flushing); the images checked before it was found may have been judged on wrong content", strays[0])})
		r.order = append(r.order[len(r.order)-1:], r.order[:len(r.order)-1]...)
	}
	sum := r.sum
	sum.Checking = time.Since(t0)
	for i := range r.points {
		if r.planned(i) {
			sum.CrashPoints++
		}
	}
	sum.Lint = r.lint
	sum.Failures = r.report()
	sum.Elapsed = time.Since(r.start)
	r.logSummary(&sum)
	return sum
}

func (r *runner) logSummary(sum *Summary) {
	logf := r.o.Logf
	if logf == nil {
		logf = r.t.Logf
	}
	for _, l := range sum.Lint {
		logf("crashtest lint: %s", l)
	}
	trunc := ""
	if sum.Truncated {
		trunc = " (time budget exhausted)"
	}
	states := 0
	for _, f := range sum.Failures {
		states += f.Count
	}
	logf("crashtest: %d crash points, %d distinct images checked (%d taken), %d distinct failures (%d states), %v%s\n\t%s",
		sum.CrashPoints, sum.Images, sum.Taken, len(sum.Failures), states, sum.Elapsed.Round(time.Millisecond), trunc, sum.Coverage)
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
		o.MaxImages = 10000
		if testing.Short() {
			o.MaxImages = 2000
		}
	}
	if o.MaxTime <= 0 {
		o.MaxTime = 2 * time.Minute
		if testing.Short() {
			o.MaxTime = 20 * time.Second
		}
	}
	if o.MaxReports <= 0 {
		o.MaxReports = 20
	}
	if o.Lines == LinesAuto {
		o.Flushes, o.Torn = true, true
	}
	if s := strings.TrimSpace(*replayFlag); s != "" {
		o.Replay = s
	}
	if s := strings.TrimSpace(*keepFlag); s != "" {
		o.Keep = s
	}
	return o
}

// runner holds one Run's state.
type runner struct {
	t     testing.TB
	w     Workload
	o     Options
	dir   string
	pkg   string
	start time.Time
	emu   *device.Emulator
	// workers check the images.
	workers []*worker
	rec     recorder
	// points are the crash points taken, in order.
	points []point
	lint   []string
	sum    Summary
	// mu guards checked and the failures, which workers share.
	mu sync.Mutex
	// checked caches the result of every image checked, by imageKey.
	checked   map[uint64]error
	truncated atomic.Bool
	// failures are the distinct failures by id; order is their order.
	failures map[string]*Failure
	order    []string
}

// opName names operation op for messages.
func (r *runner) opName(op int) string {
	if op >= 0 && op < len(r.w.Ops) {
		return r.w.Ops[op].Name
	}
	return "?"
}
