package remote_test

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// createGraph makes a pool of n nodes at url with its backup in dir.
func createGraph(t *testing.T, url, dir string, n int) {
	t.Helper()
	opts := openOpts(dir, "a.backup")
	opts.Size = 8 << 20
	h, err := remote.Open(url, opts)
	require.NoError(t, err)
	build(t, h, n)
	require.NoError(t, h.Close())
}

// reopen opens the pool again with the complete backup of createGraph,
// a short timeout and a small memory cap, so that pages fault back in.
func reopen(t *testing.T, url, dir string) *remote.Options {
	t.Helper()
	opts := openOpts(dir, "a.backup")
	opts.RemoteTimeout = 50 * time.Millisecond
	opts.LocalCap = 16 << 10
	return opts
}

// sameBytes asserts that the node's file of region name equals the
// backup byte for byte.
func sameBytes(t *testing.T, nodeDir, name, backup string) {
	t.Helper()
	a, err := os.ReadFile(filepath.Join(nodeDir, name+".region"))
	require.NoError(t, err)
	b, err := os.ReadFile(backup)
	require.NoError(t, err)
	require.Equal(t, len(a), len(b))
	assert.True(t, bytes.Equal(a, b), "node and backup differ")
}

func TestNodeStoppedThenKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("g"), dir, 100)
	opts := reopen(t, node.url("g"), dir)
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)

	// While the node is stopped, faults are served from the backup and
	// commits reach the backup only.
	require.NoError(t, node.cmd.Process.Signal(syscall.SIGSTOP))
	within(t, time.Minute, func() {
		verify(t, h, 100)
		build(t, h, 20)
		verify(t, h, 120)
	})
	st, _ := remote.Stats(h.Device())
	assert.Positive(t, st.SuspectFences)
	assert.Positive(t, st.Evicted, "the cap should have dropped pages that then faulted back in")
	assert.False(t, remote.Resynced(h.Device()))

	// Killed and restarted from its files, the node is handed what it
	// missed and converges with the backup.
	node.restart(t)
	waitFor(t, 20*time.Second, func() bool { return remote.Resynced(h.Device()) })
	build(t, h, 5)
	verify(t, h, 125)
	require.NoError(t, h.Close())
	sameBytes(t, node.dir, "g", opts.Backup)
	checkRemote(t, node.url("g"))
}

func TestSlowNodeThroughDelayingProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	proxy := startProxy(t, node.addr)
	url := remote.Scheme + proxy.addr + "/g"
	dir := t.TempDir()
	createGraph(t, url, dir, 60)
	opts := reopen(t, url, dir)
	h, err := remote.Open(url, opts)
	require.NoError(t, err)

	proxy.delay.Store(int64(400 * time.Millisecond))
	within(t, time.Minute, func() {
		verify(t, h, 60)
		build(t, h, 10)
	})
	st, _ := remote.Stats(h.Device())
	assert.Positive(t, st.SuspectFences)
	proxy.delay.Store(0)
	waitFor(t, 20*time.Second, func() bool { return remote.Resynced(h.Device()) })
	verify(t, h, 70)
	require.NoError(t, h.Close())
	sameBytes(t, node.dir, "g", opts.Backup)
}

// within runs fn and fails the test if it does not return in time: a
// fault that nothing serves would hang it.
func within(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("not done within %s", d)
	}
}

// proxy forwards connections to a node, holding what the node sends for
// delay nanoseconds when it is set.
type proxy struct {
	addr  string
	delay atomic.Int64
	// seen is every byte forwarded, both ways, if record is set.
	record atomic.Bool
	mu     sync.Mutex
	seen   []byte
}

// Write records b as forwarded.
func (p *proxy) Write(b []byte) (int, error) {
	if p.record.Load() {
		p.mu.Lock()
		p.seen = append(p.seen, b...)
		p.mu.Unlock()
	}
	return len(b), nil
}

// saw reports whether marker was forwarded either way.
func (p *proxy) saw(marker []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Contains(p.seen, marker)
}

func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, n)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(n, io.TeeReader(c, p)); n.Close() }()
			go func() { defer wg.Done(); p.forwardSlowly(c, n); c.Close() }()
		}
	}()
	return p
}

// forwardSlowly copies src to dst, holding each chunk for the delay in
// force when it arrived. Order is kept: a held chunk holds what follows.
func (p *proxy) forwardSlowly(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			_, _ = p.Write(buf[:n])
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestCapKeepsUncommittedStores has a transaction log and change objects
// on many pages under a cap of one page: each log write fences, and the
// fence drops clean pages, but never one holding stores not yet
// committed.
func TestCapKeepsUncommittedStores(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("g"), dir, 300)
	opts := openOpts(dir, "a.backup")
	opts.LocalCap = remote.PageSize
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		g, err := heap.Root[Graph](tx)
		if err != nil {
			return err
		}
		for nd := g.Head; nd != nil; nd = nd.Next {
			if err := heap.Set(tx, &nd.ID, nd.ID+1000); err != nil {
				return err
			}
		}
		return nil
	}))
	st, _ := remote.Stats(h.Device())
	assert.Positive(t, st.Evicted)
	check := func(h *heap.Heap) {
		require.NoError(t, h.View(func(tx *heap.Tx) error {
			g, err := heap.Root[Graph](tx)
			if err != nil {
				return err
			}
			i := 299
			for nd := g.Head; nd != nil; nd = nd.Next {
				require.Equal(t, i+1000, nd.ID)
				i--
			}
			return nil
		}))
	}
	check(h)
	require.NoError(t, h.Close())
	h, err = remote.Open(node.url("g"), openOpts(dir, "b.backup"))
	require.NoError(t, err)
	check(h)
	require.NoError(t, h.Close())
}
