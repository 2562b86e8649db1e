package remote_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
	"github.com/pmemgo/pmemgo/remote"
)

// runApp is an application process: it opens the pool at url with
// backup, then "build N" adds N nodes, "verify N" checks a graph of N,
// "stream" adds nodes until killed, printing each acknowledged count.
func runApp(args []string) int {
	url, backup, cmd := args[0], args[1], args[2]
	opts := &remote.Options{Backup: backup, Insecure: true, Size: 8 << 20}
	opts.Heap.ForceRelocate = os.Getenv("REMOTE_TEST_RELOCATE") != ""
	h, err := remote.Open(url, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	t := &procT{}
	verb, arg, _ := strings.Cut(cmd, " ")
	n, _ := strconv.Atoi(arg)
	switch verb {
	case "build":
		build(t, h, n)
	case "verify":
		if !h.Recovery().Relocated && opts.Heap.ForceRelocate {
			fmt.Fprintln(os.Stderr, "not relocated")
			return 1
		}
		verify(t, h, n)
	case "storm":
		storm(t, h)
	case "stream":
		for {
			build(t, h, 1)
			count := 0
			_ = h.View(func(tx *heap.Tx) error {
				g, err := heap.Root[Graph](tx)
				count = g.Count
				return err
			})
			fmt.Println(count)
		}
	}
	if t.failed {
		return 1
	}
	if err := h.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}

// procT lets the test helpers run in an application process.
type procT struct {
	testing.TB
	failed bool
}

func (t *procT) Helper() {}
func (t *procT) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	t.failed = true
}
func (t *procT) FailNow() { os.Exit(1) }

// Name is asked by testify when it reports a failure; the embedded TB is
// nil in an application process.
func (t *procT) Name() string { return "app " + strings.Join(os.Args[1:], " ") }

// app runs an application process to completion.
func app(t *testing.T, url, backup, cmd string, env ...string) {
	t.Helper()
	c := exec.Command(os.Args[0], "-test.run=^$", url, backup, cmd)
	c.Env = append(append(os.Environ(), roleEnv+"=app"), env...)
	out, err := c.CombinedOutput()
	require.NoError(t, err, "app %q: %s", cmd, out)
}

func TestRoundTripAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	app(t, node.url("g"), filepath.Join(dir, "a.backup"), "build 150")
	app(t, node.url("g"), filepath.Join(dir, "b.backup"), "verify 150", "REMOTE_TEST_RELOCATE=1")
}

func TestKillApplicationMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	c := exec.Command(os.Args[0], "-test.run=^$", node.url("g"), filepath.Join(dir, "a.backup"), "stream")
	c.Env = append(os.Environ(), roleEnv+"=app")
	c.Stderr = os.Stderr
	out, err := c.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, c.Start())
	acked := 0
	sc := bufio.NewScanner(out)
	for acked < 60 && sc.Scan() {
		acked, err = strconv.Atoi(sc.Text())
		require.NoError(t, err)
	}
	require.NoError(t, c.Process.Signal(syscall.SIGKILL))
	// Counts printed after the one read last were acknowledged too.
	for sc.Scan() {
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			acked = n
		}
	}
	_ = c.Wait()
	require.GreaterOrEqual(t, acked, 60)

	// From the node, with a fresh backup: every acknowledged commit is
	// there (at most the one in flight more), and the pool checks clean.
	h, err := remote.Open(node.url("g"), openOpts(dir, "b.backup"))
	require.NoError(t, err)
	var count int
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		g, err := heap.Root[Graph](tx)
		count = g.Count
		return err
	}))
	assert.Contains(t, []int{acked, acked + 1}, count)
	verify(t, h, count)
	require.NoError(t, h.Close())
	checkRemote(t, node.url("g"))
}

// checkRemote downloads the pool and runs the offline checker on it.
func checkRemote(t *testing.T, url string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "copy.pool"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, remote.Download(t.Context(), url, nil, f))
	var problems []string
	require.NoError(t, checkFile(f.Name(), func(p string) { problems = append(problems, p) }))
	assert.Empty(t, problems)
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not met within %s", d)
		time.Sleep(10 * time.Millisecond)
	}
}

// checkFile runs the offline checker on the pool file at path.
func checkFile(path string, problem func(string)) error {
	return recovery.CheckFile(path, func(p recovery.Problem) bool {
		problem(fmt.Sprint(p))
		return true
	})
}
