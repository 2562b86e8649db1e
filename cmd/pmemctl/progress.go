package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal. Tests replace it to see the
// progress bars.
var isTerminal = defaultIsTerminal

func defaultIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress is a progress bar for an operation that goes through a whole
// pool. It is drawn on the command's error stream, so that it never mixes
// with the output, and only when the output is a terminal and not JSON:
// in a pipe or a file it would only be noise. A progress that is not
// shown does nothing.
type progress struct {
	// mu serialises the use of bar: the spinner's ticker redraws it while
	// the command may be printing above it.
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	// stop ends the spinner's ticker; it is nil once the bar does not
	// spin.
	stop chan struct{}
}

// progressKind says what a progress counts.
type progressKind int

const (
	countItems progressKind = iota
	countBytes
)

// totalLater is the total of a progress whose total is not known yet: it
// is a spinner with the elapsed time until setTotal gives it.
const totalLater = -1

// spinInterval is how often a spinner turns.
const spinInterval = 100 * time.Millisecond

func newProgress(cmd *cobra.Command, jsonOut bool, kind progressKind, total int64, desc string) *progress {
	if jsonOut || !isTerminal(cmd.OutOrStdout()) {
		return &progress{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(cmd.ErrOrStderr()),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(spinInterval),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSpinnerType(14),
		// The spinner is turned by our own ticker, under mu, rather than
		// by the library's goroutine, which takes no lock of ours.
		progressbar.OptionSetSpinnerChangeInterval(0),
	}
	switch kind {
	case countBytes:
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
	case countItems:
		opts = append(opts, progressbar.OptionShowCount())
	}
	total = max(total, totalLater)
	if total < 0 {
		opts = append(opts, progressbar.OptionSetElapsedTime(true))
	}
	p := &progress{bar: progressbar.NewOptions64(total, opts...)}
	_ = p.bar.RenderBlank()
	if total < 0 {
		p.stop = make(chan struct{})
		go p.spin(p.stop)
	}
	return p
}

func (p *progress) spin(stop <-chan struct{}) {
	t := time.NewTicker(spinInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			// The bar may have finished or got its total while this
			// waited for the lock: a spinner drawn now would stay.
			select {
			case <-stop:
			default:
				_ = p.bar.RenderBlank()
			}
			p.mu.Unlock()
		}
	}
}

// stopSpinning stops the spinner's ticker, if it runs.
func (p *progress) stopSpinning() {
	if p.stop != nil {
		close(p.stop)
		p.stop = nil
	}
}

// setTotal gives its total to a bar created with totalLater: it stops
// spinning and becomes a bar, drawn at once rather than at its next
// move, which the throttle may hold back. A zero total is left alone:
// there is nothing to show, and a bar of zero draws nonsense.
func (p *progress) setTotal(total int64) {
	if p.bar == nil || total <= 0 {
		return
	}
	p.stopSpinning()
	p.mu.Lock()
	p.bar.ChangeMax64(total)
	_ = p.bar.RenderBlank()
	p.mu.Unlock()
}

// set moves the bar to n.
func (p *progress) set(n int64) {
	if p.bar != nil {
		p.mu.Lock()
		_ = p.bar.Set64(n)
		p.mu.Unlock()
	}
}

// add moves the bar on by n.
func (p *progress) add(n int64) {
	if p.bar != nil {
		p.mu.Lock()
		_ = p.bar.Add64(n)
		p.mu.Unlock()
	}
}

// above runs fn, which prints a line of output, with the bar cleared from
// the terminal's line so that the two do not run into each other; the bar
// is drawn again below at its next move.
func (p *progress) above(fn func()) {
	if p.bar == nil {
		fn()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Clear()
	fn()
}

// done completes the bar and erases it.
func (p *progress) done() {
	if p.bar == nil {
		return
	}
	p.stopSpinning()
	p.mu.Lock()
	_ = p.bar.Finish()
	p.mu.Unlock()
}

// checkProgress returns a callback for recovery.CheckOptions that gives
// p, created with totalLater, its total at the first call, and moves it.
func (p *progress) checkProgress() func(done, total int64) {
	if p.bar == nil {
		return nil
	}
	counting := false
	return func(done, total int64) {
		if !counting {
			p.setTotal(total)
			counting = total > 0
		}
		p.set(done)
	}
}

// walkProgress returns a callback for recovery.Walk that moves p.
func (p *progress) walkProgress() func(reached, allocated int64) {
	if p.bar == nil {
		return nil
	}
	return func(reached, _ int64) { p.set(reached) }
}
