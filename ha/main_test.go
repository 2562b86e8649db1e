package ha_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// The process tests run this test binary again as the application, to
// kill it with SIGKILL. childEnv names the role; the child runs it instead
// of the tests.
const childEnv = "PMEMGO_HA_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "app":
		os.Exit(runApp())
	default:
		fmt.Fprintln(os.Stderr, "unknown child role", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// childMaxTime bounds a child's life, should its parent fail to kill it.
const childMaxTime = 60 * time.Second

// runApp is the application: it makes the pool at $POOL (created with
// $POOL_SIZE bytes, or 8 MiB) the primary of pool "orders" (lease files in
// $COORD) as node $NODE, sealed with the key $POOL_KEY (hex) if set,
// replicating in sync mode to $REPLICA, and
// commits, printing "ack N" once commit N returned, until killed. It
// prints "started" first, and "primary" once it is.
func runApp() int {
	fmt.Println("started")
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	cfg, err := certs.LoadTLS(os.Getenv("TLS_CA"), os.Getenv("TLS_CERT"), os.Getenv("TLS_KEY"), false)
	if err != nil {
		return fail(err)
	}
	coord, err := ha.NewLeaseFile(os.Getenv("COORD"), ha.LeaseFileOptions{TTL: time.Second})
	if err != nil {
		return fail(err)
	}
	size := int64(8 << 20)
	if s := os.Getenv("POOL_SIZE"); s != "" {
		if _, err := fmt.Sscan(s, &size); err != nil {
			return fail(err)
		}
	}
	key, err := hex.DecodeString(os.Getenv("POOL_KEY"))
	if err != nil {
		return fail(err)
	}
	if len(key) == 0 {
		key = nil
	}
	h, err := heap.Open(os.Getenv("POOL"), &heap.Options{Size: size, Key: key})
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = ha.StartPrimary(ctx, h, ha.PrimaryOptions{
		Coordinator: coord, Pool: "orders", Node: os.Getenv("NODE"),
		Mirror: mirror.Options{Replicas: []string{os.Getenv("REPLICA")}, Mode: mirror.Sync, TLS: cfg, AckTimeout: 20 * time.Second},
	})
	if err != nil {
		return fail(err)
	}
	fmt.Println("primary")
	deadline := time.Now().Add(childMaxTime)
	for time.Now().Before(deadline) {
		n, err := increment(h)
		if err != nil {
			return fail(err)
		}
		fmt.Printf("ack %d\n", n)
	}
	return 0
}

// app is a running application process and its acknowledged commits.
type app struct {
	cmd   *exec.Cmd
	lines chan string
}

// startApp runs this test binary as the application on pool, with the
// primary's certificate.
func startAppProcess(t testing.TB, pool, coordDir, replica string, env ...string) *app {
	t.Helper()
	f := tlstesting.Default(t).WriteFiles(t, t.TempDir(), tlstesting.Default(t).Primary)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=app", "POOL="+pool, "COORD="+coordDir, "REPLICA="+replica, "NODE=a",
		"TLS_CA="+f.CA, "TLS_CERT="+f.Cert, "TLS_KEY="+f.Key)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	a := &app{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		defer close(a.lines)
		s := bufio.NewScanner(out)
		for s.Scan() {
			a.lines <- s.Text()
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return a
}

// waitFor reads lines until one starts with prefix.
func (a *app) waitFor(t testing.TB, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-a.lines:
			require.True(t, ok, "application exited before %q", prefix)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q from the application within 30s", prefix)
		}
	}
}

// lastAck drains the output of an exited application and returns the
// last commit it acknowledged.
func (a *app) lastAck(last uint64) uint64 {
	for l := range a.lines {
		var n uint64
		if _, err := fmt.Sscanf(l, "ack %d", &n); err == nil {
			last = n
		}
	}
	return last
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
