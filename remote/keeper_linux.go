package remote

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The agent is two processes. The pool's process starts the keeper, which
// starts the worker that serves the faults. When the worker dies (killed,
// out of memory), the keeper starts another, hands it the userfaultfd and
// wakes every thread waiting on the pool's range, so that threads whose
// fault events the dead worker had read fault again and are served. The
// restart cannot be left to the pool's process: its threads may all be
// blocked in faults (inside copy, say), holding every P, so that none of
// its goroutines would run until the faults are served. When the keeper
// dies, the worker follows it, and the pool's process starts both again
// as soon as one of its goroutines runs.
//
// After its "ok PID" answer, the keeper tells the pool's process, one line
// each, of every worker it starts ("worker PID") and of the failure that
// makes it give up ("failed CAUSE").

const (
	// restartBudget is how many times an agent is started again within
	// restartWindow before it is given up for lost: one that dies at once
	// at every start would otherwise be started forever.
	restartBudget = 8
	restartWindow = 30 * time.Second
	// startAttempts is how many times one restart tries to start an agent.
	startAttempts = 3
)

// restarts counts the restarts of an agent within the window.
type restarts struct{ at []time.Time }

// allow records a restart and reports whether the budget permits it.
func (r *restarts) allow(now time.Time) bool {
	keep := r.at[:0]
	for _, t := range r.at {
		if now.Sub(t) < restartWindow {
			keep = append(keep, t)
		}
	}
	r.at = append(keep, now)
	return len(r.at) <= restartBudget
}

// runKeeper starts the worker, then starts it again whenever it dies,
// until the pool's process closes the socket or dies. A worker that gave
// up (a page that fails to authenticate, say) is not started again: it
// would meet the same page.
func runKeeper(sock *os.File) error {
	uc, b, uffd, err := receiveConfig(sock)
	if err != nil {
		return err
	}
	defer uc.Close()
	var wmu sync.Mutex
	relay := func(verb, msg string) { _ = tell(&wmu, uc, verb, msg) }
	var cfg agentConfig
	if err = json.Unmarshal(b, &cfg); err == nil && len(cfg.Argv) == 0 {
		err = fmt.Errorf("configuration: no command to start the worker with")
	}
	var w *agentProc
	if err == nil {
		w, err = startWorker(cfg, uffd, relay)
	}
	said := ""
	if err == nil {
		said = strconv.Itoa(w.cmd.Process.Pid)
	}
	if _, werr := uc.Write([]byte(replyLine(err, said))); werr != nil || err != nil {
		if w != nil {
			_ = w.stop()
		}
		return err
	}
	gone := make(chan struct{})
	go func() {
		_, _ = uc.Read(make([]byte, 1))
		close(gone)
	}()
	var budget restarts
	for {
		select {
		case <-gone:
			return w.stop()
		case <-w.done:
		}
		<-w.heard
		cause := fmt.Errorf("worker %d exited: %v", w.cmd.Process.Pid, w.err)
		switch {
		case w.failed != nil:
			err = fmt.Errorf("worker %d gave up: %w", w.cmd.Process.Pid, w.failed)
		case !budget.allow(time.Now()):
			err = fmt.Errorf("%w, its %dth restart within %s", cause, restartBudget+1, restartWindow)
		default:
			cfg.Restart = true
			if w, err = startWorker(cfg, uffd, relay); err != nil {
				err = fmt.Errorf("%v; no worker could be started: %w", cause, err)
			}
		}
		if err != nil {
			_ = tell(&wmu, uc, "failed", err.Error())
			return err
		}
		if err := tell(&wmu, uc, "worker", strconv.Itoa(w.cmd.Process.Pid)); err != nil {
			return w.stop()
		}
	}
}

// startWorker starts a worker, trying a few times, and once it serves,
// wakes the threads waiting on faults if it replaces one.
func startWorker(cfg agentConfig, uffd int, note func(verb, arg string)) (*agentProc, error) {
	var err error
	for attempt := range startAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		var w *agentProc
		if w, _, err = spawnAgent(cfg.Argv, roleWorker, cfg, uffd, note); err != nil {
			continue
		}
		if cfg.Restart {
			if err = uffdWake(uffd, uintptr(cfg.Base), uintptr(cfg.Size)); err != nil {
				_ = w.stop()
				return nil, err
			}
		}
		return w, nil
	}
	return nil, err
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }
