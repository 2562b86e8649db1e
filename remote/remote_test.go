package remote_test

import (
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// Node is a graph node stored in remote pools by the tests.
type Node struct {
	ID    int
	Name  string
	Next  *Node
	Peers []*Node
}

// Graph is the root of the tests' pools.
type Graph struct {
	Head  *Node
	Count int
}

// build adds n nodes to the graph, one transaction each, each pointing at
// the previous node and at a few others.
func build(t testing.TB, h *heap.Heap, n int) {
	t.Helper()
	for range n {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			g, err := heap.Root[Graph](tx)
			if err != nil {
				return err
			}
			nd, err := heap.New[Node](tx)
			if err != nil {
				return err
			}
			nd.ID, nd.Next = g.Count, g.Head
			if nd.Name, err = heap.NewString(tx, name(g.Count)); err != nil {
				return err
			}
			var peers []*Node
			for p := g.Head; p != nil && len(peers) < g.Count%4; p = p.Next {
				peers = append(peers, p)
			}
			if nd.Peers, err = heap.MakeSlice[*Node](tx, len(peers), len(peers)); err != nil {
				return err
			}
			copy(nd.Peers, peers)
			if err := heap.Set(tx, &g.Head, nd); err != nil {
				return err
			}
			return heap.Set(tx, &g.Count, g.Count+1)
		}))
	}
}

func name(i int) string { return "node-" + string(rune('a'+i%26)) + "-" + itoa(i) }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// verify checks every field of a graph of want nodes.
func verify(t testing.TB, h *heap.Heap, want int) {
	t.Helper()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		g, err := heap.Root[Graph](tx)
		if err != nil {
			return err
		}
		require.Equal(t, want, g.Count)
		i := want - 1
		for nd := g.Head; nd != nil; nd = nd.Next {
			require.Equal(t, i, nd.ID)
			require.Equal(t, name(i), nd.Name)
			require.Len(t, nd.Peers, min(i%4, i))
			for k, p := range nd.Peers {
				require.Equal(t, i-1-k, p.ID)
			}
			i--
		}
		require.Equal(t, -1, i)
		return nil
	}))
}

func openOpts(dir, backup string) *remote.Options {
	return &remote.Options{Backup: filepath.Join(dir, backup), Insecure: true}
}

func TestRoundTripInProcess(t *testing.T) {
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	opts := openOpts(dir, "a.backup")
	opts.Size = 8 << 20
	h, err := remote.Open(node.url("graph"), opts)
	require.NoError(t, err)
	build(t, h, 200)
	verify(t, h, 200)
	require.NoError(t, h.Close())

	// Another client with a fresh backup, at another address: every page
	// comes from the node, and the pointers are swizzled through it.
	opts = openOpts(dir, "b.backup")
	opts.Heap.ForceRelocate = true
	h, err = remote.Open(node.url("graph"), opts)
	require.NoError(t, err)
	assert.True(t, h.Recovery().Relocated)
	verify(t, h, 200)
	build(t, h, 10)
	require.NoError(t, h.Close())

	// The first client's backup is no longer complete: reopen and check.
	h, err = remote.Open(node.url("graph"), openOpts(dir, "a.backup"))
	require.NoError(t, err)
	verify(t, h, 210)
	require.NoError(t, h.Close())
}

// TestReopenKeepsBase closes a remote pool, lets the process map memory
// as the Go runtime does, and reopens the pool: it is mapped at its old
// base, so the open rewrites no pointer.
func TestReopenKeepsBase(t *testing.T) {
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	h, opts := createPool(t, node, "graph", t.TempDir(), 8<<20)
	build(t, h, 50)
	base := uintptr(h.Recovery().NewBase)
	require.NoError(t, h.Close())
	// The kernel fills holes from the top down: map until its choice
	// reaches the pool's place, or the pool is clearly out of its way.
	for range 256 {
		b, err := unix.Mmap(-1, 0, 8<<20, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		require.NoError(t, err)
		t.Cleanup(func() { _ = unix.Munmap(b) })
		if a := uintptr(unsafe.Pointer(unsafe.SliceData(b))); a < base+8<<20 && base < a+8<<20 {
			break
		}
	}
	h, err := remote.Open(node.url("graph"), opts)
	require.NoError(t, err)
	defer h.Close()
	assert.False(t, h.Recovery().Relocated, "moved from %#x to %#x", base, h.Recovery().NewBase)
	verify(t, h, 50)
}

// TestOpenByNameOnNode opens pools by bare name through the embedded
// manager, the node answering for its own regions: a missing one is
// created when Size is set, and an unknown name is ErrNotFound.
func TestOpenByNameOnNode(t *testing.T) {
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	m := remote.NodeManager{Addr: node.addr}
	opts := openOpts(dir, "a.backup")
	opts.Size, opts.Manager = 8<<20, m
	h, err := remote.Open("byname", opts)
	require.NoError(t, err)
	build(t, h, 10)
	require.NoError(t, h.Close())

	p, err := m.Resolve(t.Context(), "byname")
	require.NoError(t, err)
	assert.Equal(t, node.url("byname"), p.URL())
	opts = openOpts(dir, "b.backup")
	opts.Manager = m
	h, err = remote.Open("byname", opts)
	require.NoError(t, err)
	verify(t, h, 10)
	require.NoError(t, h.Close())

	_, err = remote.Open("unknown", opts)
	assert.ErrorIs(t, err, remote.ErrNotFound)
	opts.Manager = nil
	_, err = remote.Open("byname", opts)
	assert.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
}

// TestNodeFileSystemFull runs a memory node in a process of its own on a
// 4 MiB file system: a pool that does not fit is refused when its region
// is created, with ErrNodeFull, and the pool that fits goes on committing
// and reopens whole. Before regions were reserved at creation, the node
// took the region and died of SIGBUS at the first write-back past the
// file system's room.
func TestNodeFileSystemFull(t *testing.T) {
	node := startNodeOnTmpfs(t, t.TempDir(), 4<<20)
	dir := t.TempDir()
	opts := openOpts(dir, "a.backup")
	opts.Size = 2 << 20
	h, err := remote.Open(node.url("fits"), opts)
	require.NoError(t, err)
	build(t, h, 10)

	big := openOpts(dir, "b.backup")
	big.Size = 4 << 20
	_, err = remote.Open(node.url("big"), big)
	require.ErrorIs(t, err, remote.ErrNodeFull)
	assert.ErrorContains(t, err, "no space left")

	build(t, h, 10)
	require.NoError(t, h.Close())
	h, err = remote.Open(node.url("fits"), openOpts(dir, "a.backup"))
	require.NoError(t, err)
	verify(t, h, 20)
	require.NoError(t, h.Close())
}

// TestRemotePoolDoesNotGrow fills a remote pool: its region keeps its
// size, so an allocation that finds no room fails with ErrNoSpace and
// Grow is refused, and the pool stays usable.
func TestRemotePoolDoesNotGrow(t *testing.T) {
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	h, _ := createPool(t, node, "small", t.TempDir(), 1<<20)
	defer h.Close()
	err := h.Update(func(tx *heap.Tx) error {
		_, err := heap.MakeSlice[uint64](tx, 1<<18, 1<<18)
		return err
	})
	require.ErrorIs(t, err, pmemgo.ErrNoSpace)
	require.ErrorIs(t, h.Grow(2<<20), device.ErrNoGrowth)
	build(t, h, 10)
	verify(t, h, 10)
}

// TestRemotePoolIdlesPastNodeTimeout leaves an open remote pool idle for
// several of the node's idle timeouts: the fault workers' connections
// are closed and replaced at the next faults, and the claim's connection
// stays, so commits after the pause reach the node (no fence goes to the
// backup alone) and the pool reopens whole.
func TestRemotePoolIdlesPastNodeTimeout(t *testing.T) {
	node := startNode(t, t.TempDir(), "127.0.0.1:0", "REMOTE_TEST_IDLE=200ms")
	dir := t.TempDir()
	h, _ := createPool(t, node, "idle", dir, 8<<20)
	build(t, h, 100)
	require.NoError(t, h.Close())

	// A fresh backup: every page the pool reads comes from the node.
	h, err := remote.Open(node.url("idle"), openOpts(dir, "b.backup"))
	require.NoError(t, err)
	time.Sleep(time.Second)
	verify(t, h, 100)
	time.Sleep(time.Second)
	build(t, h, 10)
	st, ok := remote.Stats(h.Device())
	require.True(t, ok)
	assert.Zero(t, st.SuspectFences, "a commit after the pause reached only the backup")
	require.NoError(t, h.Close())

	h, err = remote.Open(node.url("idle"), openOpts(dir, "c.backup"))
	require.NoError(t, err)
	defer h.Close()
	verify(t, h, 110)
}

// createPool opens a new pool of size bytes in region name of node, with
// its backup in dir, and returns it with the options it was opened with.
func createPool(t *testing.T, node *nodeProc, name, dir string, size int64) (*heap.Heap, *remote.Options) {
	t.Helper()
	opts := openOpts(dir, "a.backup")
	opts.Size = size
	h, err := remote.Open(node.url(name), opts)
	require.NoError(t, err)
	return h, opts
}
