package remote

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

// agentProc is a running agent process, seen from the process that
// started it: the pool's process sees its keeper, a keeper its worker.
type agentProc struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	r    *bufio.Reader
	done chan struct{}
	err  error

	// What the agent tells once ready, one line each (see listen).
	// note is told each "warn MESSAGE" and "repair OFFSET" line.
	note     func(verb, arg string)
	worker   atomic.Int64
	restarts atomic.Uint64
	// heard is closed once the agent's socket reached its end; failed is
	// set before, if the agent gave up.
	heard  chan struct{}
	failed error
}

// spawnAgent starts argv as an agent of role, hands it the userfaultfd
// and cfg, and waits until it answers that it is ready. It returns what
// the agent said after "ok".
func spawnAgent(argv []string, role string, cfg agentConfig, uffd int, note func(verb, arg string)) (*agentProc, string, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "agent"), os.NewFile(uintptr(fds[1]), "agent")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), agentEnv+"="+role)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		mine.Close()
		return nil, "", err
	}
	fc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, "", err
	}
	a := &agentProc{cmd: cmd, conn: fc.(*net.UnixConn), done: make(chan struct{}), note: note, heard: make(chan struct{})}
	a.r = bufio.NewReader(a.conn)
	go func() {
		a.err = cmd.Wait()
		close(a.done)
	}()
	said, err := a.handshake(cfg, uffd)
	if err != nil {
		_ = a.stop()
		if a.err != nil {
			err = fmt.Errorf("%s exited before it was ready (%v): %w", argv[0], a.err, err)
		}
		return nil, "", err
	}
	go a.listen()
	return a, said, nil
}

// listen reads what the agent tells until its socket ends: "worker PID"
// when a keeper started another worker, "warn MESSAGE", "repair OFFSET"
// when the node's copy of the pool page at OFFSET is damaged and the
// backup's is good, "failed CAUSE" when the agent gives up.
func (a *agentProc) listen() {
	defer close(a.heard)
	for {
		line, err := a.r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch verb {
		case "worker":
			pid, _ := strconv.Atoi(arg)
			a.worker.Store(int64(pid))
			a.restarts.Add(1)
		case "warn", "repair":
			a.note(verb, arg)
		case "failed":
			a.failed = errors.New(arg)
		}
	}
}

// tell sends the agent's parent a line (see listen) on the socket c.
func tell(mu *sync.Mutex, c *net.UnixConn, verb string, msg string) error {
	mu.Lock()
	defer mu.Unlock()
	_, err := c.Write([]byte(verb + " " + strings.ReplaceAll(msg, "\n", " ") + "\n"))
	return err
}

func (a *agentProc) handshake(cfg agentConfig, uffd int) (string, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	if _, _, err := a.conn.WriteMsgUnix(b, unix.UnixRights(uffd), nil); err != nil {
		return "", err
	}
	_ = a.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := a.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no answer: %w", err)
	}
	said, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ok")
	if !ok {
		return "", errors.New(strings.TrimPrefix(strings.TrimSuffix(line, "\n"), "error "))
	}
	return strings.TrimSpace(said), a.conn.SetReadDeadline(time.Time{})
}

// replyLine is an agent's answer to its configuration: ok, followed by
// what it has to say, or the error that stops it.
func replyLine(err error, said ...string) string {
	if err != nil {
		return "error " + oneLine(err) + "\n"
	}
	return strings.Join(append([]string{"ok"}, said...), " ") + "\n"
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
