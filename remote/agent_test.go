package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// TestAgentKilledDuringFaultStorm kills the worker that serves the
// faults, twice, while 4*GOMAXPROCS goroutines of an application process
// fault on cold pages, half of them inside copy: the faults the dead
// worker had taken are served by the next, and every goroutine reads the
// node's bytes. The application runs without asynchronous preemption, so
// that no preemption signal makes a waiting thread fault again: only the
// keeper's wake does. A proxy, in a process of its own, slows each fetch
// so that the storm lasts through both kills.
func TestAgentKilledDuringFaultStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("storm"), dir, 50)
	url := remote.Scheme + startProxyProc(t, node.addr, 10*time.Millisecond) + "/storm"
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", url, filepath.Join(dir, "cold.backup"), "storm")
	c.Env = append(os.Environ(), roleEnv+"=app", "GODEBUG=asyncpreemptoff=1",
		"REMOTE_TEST_IMAGE="+filepath.Join(node.dir, "storm.region"))
	out, err := c.CombinedOutput()
	require.NoError(t, ctx.Err(), "the storm did not complete: %s", out)
	require.NoError(t, err, "%s", out)
}

// storm is the application side of TestAgentKilledDuringFaultStorm. The
// kills come from a shell, since this process's goroutines may hold
// every P while they wait on faults.
func storm(t testing.TB, h *heap.Heap) {
	image, err := os.ReadFile(os.Getenv("REMOTE_TEST_IMAGE"))
	require.NoError(t, err)
	keeper, worker := remote.AgentPids(h.Device())
	// The second kill waits for the next worker, and may catch it before
	// it is ready: the keeper then tries again.
	// The killed worker stays among the keeper's children until the
	// keeper reaps it (each pid in the list is followed by a space): the
	// next worker is the one that is not it.
	killer := exec.Command("sh", "-c", fmt.Sprintf(`sleep 0.2; kill -9 %[1]d
		c=
		for i in $(seq 500); do
			for p in $(cat /proc/%[2]d/task/*/children); do
				[ "$p" != %[1]d ] && c=$p
			done
			[ -n "$c" ] && break
			sleep 0.01
		done
		sleep 0.1; kill -9 $c`, worker, keeper))
	var said bytes.Buffer
	killer.Stdout, killer.Stderr = &said, &said
	require.NoError(t, killer.Start())

	mem := h.Device().Bytes()
	half := len(mem) / 2
	workers := 4 * runtime.GOMAXPROCS(0)
	chunk := half / workers &^ (remote.PageSize - 1)
	copies := make([][]byte, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			src := mem[half+w*chunk : half+(w+1)*chunk]
			if w%2 == 0 {
				copies[w] = make([]byte, len(src))
				copy(copies[w], src)
				return
			}
			for i := 0; i < len(src); i += remote.PageSize {
				_ = src[i]
			}
		})
	}
	wg.Wait()
	require.NoError(t, killer.Wait(), "the killer found no worker to kill: %s", said.String())
	for w, c := range copies {
		if c != nil {
			assert.True(t, bytes.Equal(image[half+w*chunk:half+(w+1)*chunk], c), "copy %d", w)
		}
	}
	assert.True(t, bytes.Equal(image[half:], mem[half:]), "pages differ from the node's")
	// The keeper tells of a restart after waking the faults.
	deadline := time.Now().Add(10 * time.Second)
	for st, _ := remote.Stats(h.Device()); st.AgentRestarts == 0; st, _ = remote.Stats(h.Device()) {
		require.True(t, time.Now().Before(deadline), "no restart counted")
		time.Sleep(10 * time.Millisecond)
	}
	verify(t, h, 50)
	build(t, h, 5)
}

// TestAgentKeeperKilled kills the keeper, which takes its worker along:
// the pool's process starts both again, and cold pages are still served.
func TestAgentKeeperKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("g"), dir, 100)
	h, err := remote.Open(node.url("g"), openOpts(dir, "cold.backup"))
	require.NoError(t, err)
	keeper, worker := remote.AgentPids(h.Device())
	require.NoError(t, syscall.Kill(keeper, syscall.SIGKILL))
	waitFor(t, 20*time.Second, func() bool {
		k, w := remote.AgentPids(h.Device())
		return k != keeper && w != worker
	})
	within(t, time.Minute, func() { verify(t, h, 100) })
	build(t, h, 5)
	st, _ := remote.Stats(h.Device())
	assert.Equal(t, uint64(1), st.AgentRestarts)
	require.NoError(t, h.Close())
}

// TestAgentCannotRestart runs the agent through a wrapper that fails every
// start after the first two (keeper and worker), then kills the worker:
// the pool fails clearly, logged at ERROR, with commits and Close
// returning ErrAgentFailed and its cause.
func TestAgentCannotRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("g"), dir, 20)
	count := filepath.Join(dir, "starts")
	script := `n=$(cat "$0" 2>/dev/null || echo 0); echo $((n+1)) > "$0"; [ "$n" -lt 2 ] || exit 7; exec "$1"`
	opts := openOpts(dir, "a.backup")
	opts.Agent = []string{"sh", "-c", script, count, os.Args[0]}
	var logs syncBuffer
	opts.Heap.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	verify(t, h, 20)
	_, worker := remote.AgentPids(h.Device())
	require.NoError(t, syscall.Kill(worker, syscall.SIGKILL))

	var commitErr error
	waitFor(t, 30*time.Second, func() bool {
		commitErr = h.Update(func(tx *heap.Tx) error {
			g, err := heap.Root[Graph](tx)
			if err != nil {
				return err
			}
			return heap.Set(tx, &g.Count, g.Count)
		})
		return commitErr != nil
	})
	assert.ErrorIs(t, commitErr, remote.ErrAgentFailed)
	assert.Contains(t, commitErr.Error(), "exit status 7")
	assert.Contains(t, logs.String(), "level=ERROR")
	err = h.Close()
	assert.ErrorIs(t, err, remote.ErrAgentFailed)
}

// syncBuffer is a bytes.Buffer that a logger may write from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
