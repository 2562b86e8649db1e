package remote

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

// agentProc is a running agent, seen from the pool's process.
type agentProc struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	done chan struct{}
	err  error
}

// startAgent starts the agent, hands it the userfaultfd and its
// configuration, and waits until it is connected to the node.
func startAgent(s *session, uffd int, base uint64) (*agentProc, error) {
	argv := s.opts.Agent
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("start fault agent: %w", err)
		}
		argv = []string{exe}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start fault agent: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "agent"), os.NewFile(uintptr(fds[1]), "agent")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), agentEnv+"=1")
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		return nil, fmt.Errorf("start fault agent %s: %w", argv[0], err)
	}
	fc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	a := &agentProc{cmd: cmd, conn: fc.(*net.UnixConn), done: make(chan struct{})}
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
	if err := a.handshake(s, uffd, base); err != nil {
		_ = a.stop()
		return nil, fmt.Errorf("start fault agent %s: %w", argv[0], err)
	}
	return a, nil
}

func (a *agentProc) handshake(s *session, uffd int, base uint64) error {
	cfg, err := json.Marshal(agentConfig{
		Addr: s.addr, Name: s.name, Insecure: s.opts.Insecure, TLS: s.opts.TLS, Base: base, Size: s.size,
		Backup: s.opts.Backup, Timeout: s.opts.RemoteTimeout, Complete: s.side.Complete,
		Readahead: int(s.opts.Readahead / PageSize), Pid: os.Getpid(),
	})
	if err != nil {
		return err
	}
	if _, _, err := a.conn.WriteMsgUnix(cfg, unix.UnixRights(uffd), nil); err != nil {
		return err
	}
	_ = a.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	n, err := a.conn.Read(buf)
	if err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	if string(buf[:n]) != "ok" {
		return errors.New(string(buf[:n]))
	}
	return a.conn.SetReadDeadline(time.Time{})
}

// stop closes the agent's socket, on which it exits, and waits for it.
func (a *agentProc) stop() error {
	a.conn.Close()
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	var ee *exec.ExitError
	if errors.As(a.err, &ee) {
		return fmt.Errorf("fault agent: %w", a.err)
	}
	return nil
}

// subscribers is the set of a device's write-back subscribers.
type subscribers struct {
	mu   sync.Mutex
	list []*subscription
}

type subscription struct{ s device.Subscriber }

func (ss *subscribers) add(s device.Subscriber) (cancel func()) {
	if s == nil {
		return func() {}
	}
	sub := &subscription{s: s}
	ss.mu.Lock()
	ss.list = append(append([]*subscription(nil), ss.list...), sub)
	ss.mu.Unlock()
	return func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		next := make([]*subscription, 0, len(ss.list))
		for _, e := range ss.list {
			if e != sub {
				next = append(next, e)
			}
		}
		ss.list = next
	}
}

func (ss *subscribers) load() []*subscription {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.list
}

func (ss *subscribers) writeBack(off, n int) {
	for _, e := range ss.load() {
		e.s.WriteBack(off, n)
	}
}

func (ss *subscribers) fence() {
	for _, e := range ss.load() {
		e.s.Fence()
	}
}
