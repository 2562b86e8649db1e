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
	mu   sync.Mutex
	bar  *progressbar.ProgressBar
	stop chan struct{}
}

// progressKind says what a progress counts.
type progressKind int

const (
	countItems progressKind = iota
	countBytes
	// spin is for an operation whose length is unknown: a spinner with
	// the elapsed time.
	spin
)

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
	case spin:
		total = -1
		opts = append(opts, progressbar.OptionSetElapsedTime(true))
	}
	p := &progress{bar: progressbar.NewOptions64(max(total, -1), opts...)}
	_ = p.bar.RenderBlank()
	if kind == spin {
		p.stop = make(chan struct{})
		go p.spin()
	}
	return p
}

func (p *progress) spin() {
	t := time.NewTicker(spinInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			_ = p.bar.RenderBlank()
			p.mu.Unlock()
		}
	}
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
	if p.stop != nil {
		close(p.stop)
	}
	p.mu.Lock()
	_ = p.bar.Finish()
	p.mu.Unlock()
}

// walkProgress returns a callback for recovery.Walk that moves p.
func (p *progress) walkProgress() func(reached, allocated int64) {
	if p.bar == nil {
		return nil
	}
	return func(reached, _ int64) { p.set(reached) }
}
