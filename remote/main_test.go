package remote_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/remote"
)

// roleEnv makes the test binary play a part other than the tests: a
// memory node, or an application (see app_test.go).
const roleEnv = "REMOTE_TEST_ROLE"

func TestMain(m *testing.M) {
	remote.AgentMain()
	switch os.Getenv(roleEnv) {
	case "node":
		os.Exit(runNode(os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]))
	case "echo":
		os.Exit(runEcho())
	case "app":
		os.Exit(runApp(os.Args[len(os.Args)-3:]))
	case "proxy":
		os.Exit(runProxy(os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]))
	}
	// Agents exit at every Close; built with -race, each would sleep a
	// second before exiting, which is the race runtime's default.
	if !strings.Contains(os.Getenv("GORACE"), "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	os.Exit(m.Run())
}

// runNode serves a memory node on loopback and prints its address; it
// runs until killed. It serves plain TCP, or mutual TLS with the files
// named by REMOTE_TEST_TLS (CA, certificate and key, joined by the path
// list separator) and the policy in REMOTE_TEST_POLICY (JSON).
func runNode(dir, listen string) int {
	if size := os.Getenv(tmpfsEnv); size != "" {
		if err := syscall.Mount("pmemgo-test", dir, "tmpfs", 0, "size="+size); err != nil {
			fmt.Fprintln(os.Stderr, "mount a tmpfs over", dir+":", err)
			return 1
		}
	}
	workers, _ := strconv.Atoi(os.Getenv("REMOTE_TEST_WORKERS"))
	opts := remote.NodeOptions{Dir: dir, Insecure: true, Workers: workers, FIFO: os.Getenv("REMOTE_TEST_FIFO") != ""}
	if d, err := time.ParseDuration(os.Getenv("REMOTE_TEST_IDLE")); err == nil {
		opts.IdleTimeout = d
	}
	if files := filepath.SplitList(os.Getenv("REMOTE_TEST_TLS")); len(files) == 3 {
		cfg, err := certs.LoadTLS(files[0], files[1], files[2], true)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		opts.TLS, opts.Insecure = cfg, false
	}
	if p := os.Getenv("REMOTE_TEST_POLICY"); p != "" {
		opts.Policy = &remote.Policy{}
		if err := json.Unmarshal([]byte(p), opts.Policy); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	n, err := remote.NewNode(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(l.Addr().String())
	_ = n.Serve(l)
	return 0
}

// runProxy forwards connections on loopback to target, holding what
// target sends for delay, and prints its address; it runs until killed.
// Unlike startProxy's, its goroutines cannot be held up by the faults of
// the test's process.
func runProxy(target, delay string) int {
	d, err := time.ParseDuration(delay)
	if err != nil {
		return 1
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	fmt.Println(l.Addr().String())
	p := &proxy{}
	p.delay.Store(int64(d))
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		n, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		go func() { _, _ = io.Copy(n, c); n.Close() }()
		go func() { p.forwardSlowly(c, n); c.Close() }()
	}
}

// startProxyProc starts a delaying proxy to target in a process of its
// own and returns its address.
func startProxyProc(t testing.TB, target string, delay time.Duration) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", target, delay.String())
	cmd.Env = append(os.Environ(), roleEnv+"=proxy")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "proxy process gave no address")
	return strings.TrimSpace(line)
}

// runEcho answers each 17-byte request on loopback with 4 KiB, the shape
// of a page read, and prints its address; it runs until killed.
func runEcho() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	fmt.Println(l.Addr().String())
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			req, page := make([]byte, 17), make([]byte, remote.PageSize)
			for {
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				if _, err := c.Write(page); err != nil {
					return
				}
			}
		}()
	}
}

// nodeProc is a memory node in a process of its own.
type nodeProc struct {
	dir, addr string
	cmd       *exec.Cmd
}

// startNode starts a node process serving dir on listen ("127.0.0.1:0"
// for any port) and stops it when the test ends.
func startNode(t testing.TB, dir, listen string, env ...string) *nodeProc {
	t.Helper()
	p, err := launchNode(t, dir, listen, nil, env...)
	require.NoError(t, err)
	return p
}

// startNodeOnTmpfs starts a node process as startNode does, in a mount
// namespace of its own where dir is a tmpfs of size bytes: a small file
// system that the node can fill. It skips the test where the process
// cannot have a mount namespace or mount (it needs CAP_SYS_ADMIN).
func startNodeOnTmpfs(t testing.TB, dir string, size int64) *nodeProc {
	t.Helper()
	p, err := launchNode(t, dir, "127.0.0.1:0", &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS},
		fmt.Sprintf("%s=%d", tmpfsEnv, size))
	if err != nil {
		t.Skipf("no node on a tmpfs of its own: %v", err)
	}
	return p
}

// tmpfsEnv makes the node process mount a tmpfs of that many bytes over
// its directory first.
const tmpfsEnv = "REMOTE_TEST_TMPFS"

// launchNode starts a node process and waits for its address.
func launchNode(t testing.TB, dir, listen string, attr *syscall.SysProcAttr, env ...string) (*nodeProc, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$", dir, listen)
	cmd.Env = append(append(os.Environ(), roleEnv+"=node"), env...)
	cmd.SysProcAttr = attr
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &nodeProc{dir: dir, cmd: cmd}
	t.Cleanup(func() { p.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("node process gave no address: %w", err)
	}
	p.addr = strings.TrimSpace(line)
	return p, nil
}

// kill stops the node at once, as a crash would.
func (p *nodeProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

func (p *nodeProc) url(name string) string { return remote.Scheme + p.addr + "/" + name }

// restart kills the node and starts it again from its files on the same
// address.
func (p *nodeProc) restart(t testing.TB) {
	t.Helper()
	p.kill()
	var q *nodeProc
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The port may take a moment to be free again.
		l, err := net.Listen("tcp", p.addr)
		if err == nil {
			l.Close()
			q = startNode(t, p.dir, p.addr)
			break
		}
		require.True(t, time.Now().Before(deadline), "port %s stays busy", p.addr)
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd = q.cmd
}
