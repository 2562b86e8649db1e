package mirror_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// The process tests run this test binary again as a child, a primary or
// a replica server, to kill it with SIGKILL. childEnv names the role; the
// child runs it instead of the tests.
const childEnv = "PMEMGO_MIRROR_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "primary":
		os.Exit(runPrimary())
	case "server":
		os.Exit(runServer())
	case "echo":
		os.Exit(runEcho())
	default:
		fmt.Fprintln(os.Stderr, "unknown child role", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// childMaxTime bounds a child's life, should its parent fail to kill it.
const childMaxTime = 60 * time.Second

// runPrimary runs the workload on the pool at $POOL, replicated to
// $REPLICA in $MODE over TLS (childTLSEnv), printing "ack N" once commit
// N returned without error, until killed.
func runPrimary() int {
	h, err := heap.Open(os.Getenv("POOL"), &heap.Options{Size: poolSize})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, err := childTLS(false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mode := mirror.Sync
	if os.Getenv("MODE") == "async" {
		mode = mirror.Async
	}
	m, err := mirror.Start(h, mirror.Options{
		Replicas: []string{os.Getenv("REPLICA")}, Mode: mode,
		MaxLagTime: 50 * time.Millisecond, AckTimeout: 20 * time.Second, TLS: cfg,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	deadline := time.Now().Add(childMaxTime)
	for i := uint64(1); i < 1e6 && time.Now().Before(deadline); i++ {
		if err := h.Update(func(tx *heap.Tx) error { return step(tx, i) }); err != nil {
			fmt.Printf("error %d: %v\n", i, err)
			return 1
		}
		fmt.Printf("ack %d\n", i)
	}
	return 0
}

// runServer runs a replica server on $DIR, listening on $LISTEN with TLS
// (childTLSEnv), until SIGTERM. It prints "listening ADDR" once it
// accepts.
func runServer() int {
	cfg, err := childTLS(true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := mirror.NewServer(mirror.ServerOptions{Dir: os.Getenv("DIR"), TLS: cfg})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("tcp", os.Getenv("LISTEN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", l.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go srv.Serve(l)
	select {
	case <-sig:
	case <-time.After(childMaxTime):
	}
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runEcho listens on $LISTEN and echoes what each connection sends, the
// round trip a replica server in its own process is measured against,
// until SIGTERM. It prints "listening ADDR" once it accepts.
func runEcho() int {
	l, err := net.Listen("tcp", os.Getenv("LISTEN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", l.Addr())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	select {
	case <-sig:
	case <-time.After(childMaxTime):
	}
	return 0
}

// child is a running child process and the lines of its output.
type child struct {
	cmd   *exec.Cmd
	lines <-chan string
}

// startChild runs this test binary as a child in the given role.
func startChild(t testing.TB, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	cmd.Stderr = &prefixWriter{t: t, prefix: role + ": "}
	// A pipe of our own, not StdoutPipe: Wait closes that one as soon as
	// the child is dead, and the lines it printed just before a kill,
	// still in the pipe, would be lost.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: readLines(out)}
	t.Cleanup(func() {
		c.kill()
		out.Close()
	})
	return c
}

// kill kills the child with SIGKILL and waits for it.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
		c.cmd.Wait()
	}
}

// stop asks the child to stop with SIGTERM and waits for it.
func (c *child) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// prefixWriter logs a child's error output.
type prefixWriter struct {
	t      testing.TB
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + l)
	}
	return len(p), nil
}
