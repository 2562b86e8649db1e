package etcdnames_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/etcdtest"
	"github.com/pmemgo/pmemgo/remote"
	"github.com/pmemgo/pmemgo/remote/etcdnames"
)

func TestMain(m *testing.M) {
	remote.AgentMain()
	// Agents exit at every Close; built with -race, each would sleep a
	// second before exiting, which is the race runtime's default.
	if !strings.Contains(os.Getenv("GORACE"), "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	os.Exit(m.Run())
}

// Counter is the root of the test's pools.
type Counter struct {
	N    int
	Name string
}

// startEtcd runs a real one-member etcd on loopback in this process and
// returns a client of it.
func startEtcd(t *testing.T) *clientv3.Client {
	return etcdtest.Start(t, "remote-test").NewClient(t)
}

// startNode serves a memory node on loopback in this process.
func startNode(t *testing.T) (*remote.Node, string) {
	n, err := remote.NewNode(remote.NodeOptions{Dir: t.TempDir(), Insecure: true})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = n.Serve(l) }()
	t.Cleanup(func() { _ = n.Close() })
	return n, l.Addr().String()
}

func set(t *testing.T, h *heap.Heap, n int, name string) {
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[Counter](tx)
		if err != nil {
			return err
		}
		if c.Name, err = heap.NewString(tx, name); err != nil {
			return err
		}
		return heap.Set(tx, &c.N, n)
	}))
}

func get(t *testing.T, h *heap.Heap) (int, string) {
	var c Counter
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[Counter](tx)
		c = Counter{N: r.N, Name: strings.Clone(r.Name)}
		return err
	}))
	return c.N, c.Name
}

// TestOpenByNameThroughEtcd places a pool in a real etcd, opens it by its
// bare name (creating its region on the node the placement names), moves
// the placement and opens it again from an empty backup.
func TestOpenByNameThroughEtcd(t *testing.T) {
	cli := startEtcd(t)
	m := &etcdnames.Manager{Client: cli}
	node, addr := startNode(t)
	ctx := t.Context()
	dir := t.TempDir()
	open := func(backup string, size int64) (*heap.Heap, error) {
		return remote.Open("orders", &remote.Options{Backup: filepath.Join(dir, backup), Insecure: true, Size: size, Manager: m})
	}

	_, err := open("a.backup", 8<<20)
	require.ErrorIs(t, err, remote.ErrNotFound, "no placement yet")

	epoch, err := m.Place(ctx, "orders", remote.Placement{Node: addr, Region: "orders-r1"}, 0)
	require.NoError(t, err)
	_, err = m.Place(ctx, "orders", remote.Placement{Node: addr, Region: "other"}, 0)
	require.ErrorIs(t, err, remote.ErrMoved, "a second create")

	h, err := open("a.backup", 8<<20)
	require.NoError(t, err)
	set(t, h, 42, "placed by etcd")
	require.NoError(t, h.Close())
	st := node.Status()
	require.Len(t, st.Regions, 1)
	assert.Equal(t, "orders-r1", st.Regions[0].Name)

	p, err := m.Resolve(ctx, "orders")
	require.NoError(t, err)
	assert.Equal(t, remote.Placement{Node: addr, Region: "orders-r1", Epoch: epoch}, p)

	// A move with a stale epoch is refused; one with the current epoch
	// takes, and the size it records is checked at open.
	_, err = m.Place(ctx, "orders", remote.Placement{Node: addr, Region: "elsewhere"}, epoch-1)
	require.ErrorIs(t, err, remote.ErrMoved)
	epoch, err = m.Place(ctx, "orders", remote.Placement{Node: addr, Region: "orders-r1", Size: 4096}, epoch)
	require.NoError(t, err)
	_, err = open("b.backup", 0)
	require.ErrorIs(t, err, remote.ErrProtocol)
	epoch, err = m.Place(ctx, "orders", remote.Placement{Node: addr, Region: "orders-r1", Size: st.Regions[0].Size}, epoch)
	require.NoError(t, err)

	h, err = open("b.backup", 0)
	require.NoError(t, err)
	n, name := get(t, h)
	assert.Equal(t, 42, n)
	assert.Equal(t, "placed by etcd", name)
	require.NoError(t, h.Close())

	require.NoError(t, m.Remove(ctx, "orders", epoch))
	_, err = m.Resolve(ctx, "orders")
	require.ErrorIs(t, err, remote.ErrNotFound)
}

// TestBadPlacement puts values in etcd that are not placements: Resolve
// names the key.
func TestBadPlacement(t *testing.T) {
	cli := startEtcd(t)
	m := &etcdnames.Manager{Client: cli, Prefix: "/test/"}
	for _, v := range []string{"not json", `{"node":"no-port","region":"r"}`, `{"node":"127.0.0.1:1","region":"../x"}`} {
		_, err := cli.Put(t.Context(), m.Key("bad"), v)
		require.NoError(t, err)
		_, err = m.Resolve(t.Context(), "bad")
		require.ErrorIs(t, err, remote.ErrProtocol, v)
		assert.Contains(t, err.Error(), "/test/bad", v)
	}
}
