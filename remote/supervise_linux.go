package remote

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// startKeeper starts the fault agent of the pool mapped at base, with the
// userfaultfd uffd. restart says it replaces one that died.
func (d *remoteDevice) startKeeper(restart bool) (*agentProc, error) {
	s := d.s
	argv := s.opts.Agent
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("start fault agent: %w", err)
		}
		argv = []string{exe}
	}
	cfg := agentConfig{
		Addr: s.addr, Name: s.name, Insecure: s.opts.Insecure, TLS: s.opts.TLS, Base: uint64(d.base),
		Size: uint64(len(d.mem)), Region: s.size, Backup: s.opts.Backup, Timeout: s.opts.RemoteTimeout,
		Complete: s.side.Complete, Readahead: int(s.opts.Readahead / PageSize), Pid: os.Getpid(), Argv: argv,
		Restart: restart,
	}
	if d.seal != nil {
		cfg.Key, cfg.UUID = d.seal.key, d.seal.uuid
	}
	note := func(verb, msg string) {
		if verb == "repair" {
			d.repair(msg)
			return
		}
		d.log.Warn("pmemgo remote: fault agent: "+msg, "pool", s.name)
	}
	a, said, err := spawnAgent(argv, roleKeeper, cfg, d.uffd, note)
	if err != nil {
		return nil, fmt.Errorf("start fault agent %s: %w", argv[0], err)
	}
	pid, _ := strconv.Atoi(said)
	a.worker.Store(int64(pid))
	return a, nil
}

// watch starts the fault agent again whenever its keeper dies, until the
// device closes; when the keeper gave up, or no keeper can be started,
// the device fails with ErrAgentFailed.
func (d *remoteDevice) watch(k *agentProc) {
	defer close(d.watched)
	var budget restarts
	for {
		<-k.done
		<-k.heard
		if d.agentStopping() {
			return
		}
		cause := k.failed
		if cause == nil {
			cause = fmt.Errorf("keeper %d exited: %v", k.cmd.Process.Pid, k.err)
			d.log.Warn("pmemgo remote: fault agent exited; starting another", "pool", d.s.name, "cause", cause)
			next, err := d.restartKeeper(&budget)
			if next != nil {
				k = next
				continue
			}
			if err == nil || d.agentStopping() {
				return
			}
			cause = fmt.Errorf("%v; no other could be started: %w", cause, err)
		}
		err := fmt.Errorf("pool %s: %v: %w", d.s.name, cause, ErrAgentFailed)
		// Logged first, so that whoever meets the error finds it logged.
		d.log.Error("pmemgo remote: fault agent failed, faults are no longer served", "pool", d.s.name, "err", err)
		d.agentMu.Lock()
		d.agentErr = err
		d.agentMu.Unlock()
		return
	}
}

// restartKeeper starts a keeper in place of a dead one. It returns nil
// and no error if the device closed meanwhile.
func (d *remoteDevice) restartKeeper(budget *restarts) (*agentProc, error) {
	if !budget.allow(time.Now()) {
		return nil, fmt.Errorf("%d restarts within %s", restartBudget, restartWindow)
	}
	next, err := d.startKeeper(true)
	if err != nil {
		return nil, err
	}
	d.agentMu.Lock()
	defer d.agentMu.Unlock()
	if d.stopping {
		_ = next.stop()
		return nil, nil
	}
	d.agentRestarts.Add(d.agent.restarts.Load() + 1)
	d.agent = next
	return next, nil
}

func (d *remoteDevice) agentStopping() bool {
	d.agentMu.Lock()
	defer d.agentMu.Unlock()
	return d.stopping
}

// agentFailure returns the error that ended the fault agent, if it did.
func (d *remoteDevice) agentFailure() error {
	d.agentMu.Lock()
	defer d.agentMu.Unlock()
	return d.agentErr
}

// stopAgent stops the fault agent for good and waits until no restart is
// under way.
func (d *remoteDevice) stopAgent() error {
	d.agentMu.Lock()
	d.stopping = true
	k := d.agent
	d.agentMu.Unlock()
	err := k.stop()
	<-d.watched
	if failed := d.agentFailure(); failed != nil {
		return failed
	}
	return err
}
