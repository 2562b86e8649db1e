package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
	"github.com/pmemgo/pmemgo/recovery"
)

func uintptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

// poolSize is the size of the test pools: small, so that snapshots are
// quick under the race detector.
const poolSize = 4 << 20

// listLen is how many nodes the workload's list keeps.
const listLen = 40

// Node and Root are the workload's types. Commit i pushes a node holding i
// on the list, drops (and frees) the oldest node beyond listLen, sets N to
// i and writes i in slot i%64: every commit changes several lines, in the
// undo log, the slab bitmaps and the objects, so a replica holding a mix
// of two commits fails verify.
type Node struct {
	V    uint64
	Next *Node
	Pad  [48]byte
}

type Root struct {
	N     uint64
	Len   uint64
	Head  *Node
	Slots [64]uint64
}

// step makes commit i of the workload.
func step(tx *heap.Tx, i uint64) error {
	r, err := heap.Root[Root](tx)
	if err != nil {
		return err
	}
	if err := heap.Add(tx, r); err != nil {
		return err
	}
	n, err := heap.New[Node](tx)
	if err != nil {
		return err
	}
	n.V, n.Next = i, r.Head
	for k := range n.Pad {
		n.Pad[k] = byte(i)
	}
	r.Head, r.N, r.Slots[i%64] = n, i, i
	r.Len++
	if r.Len > listLen {
		p := r.Head
		for p.Next.Next != nil {
			p = p.Next
		}
		if err := heap.Free(tx, p.Next); err != nil {
			return err
		}
		if err := heap.Set(tx, &p.Next, nil); err != nil {
			return err
		}
		r.Len--
	}
	return nil
}

// verify checks that the pool holds exactly the state after some commit of
// the workload and returns that commit's number.
func verify(tx *heap.Tx) (uint64, error) {
	r, err := heap.Root[Root](tx)
	if err != nil || r == nil {
		return 0, err
	}
	c := r.N
	if r.Len != min(c, listLen) {
		return c, fmt.Errorf("commit %d: list length %d", c, r.Len)
	}
	v := c
	for p := r.Head; p != nil; p = p.Next {
		if p.V != v {
			return c, fmt.Errorf("commit %d: list node holds %d, want %d", c, p.V, v)
		}
		for _, b := range p.Pad {
			if b != byte(v) {
				return c, fmt.Errorf("commit %d: node %d padding holds %d", c, v, b)
			}
		}
		v--
	}
	if c-v != r.Len {
		return c, fmt.Errorf("commit %d: list of %d nodes, length says %d", c, c-v, r.Len)
	}
	for j, s := range r.Slots {
		want := uint64(0)
		if c >= uint64(j) && c > 0 {
			want = c - (c-uint64(j))%64
		}
		if s != want {
			return c, fmt.Errorf("commit %d: slot %d holds %d, want %d", c, j, s, want)
		}
	}
	return c, nil
}

// fastDir returns a directory removed after the test, on tmpfs when there
// is one: fsyncs on a disk would dominate the tests' time.
func fastDir(t testing.TB) string {
	return benchutil.PoolDir(t)
}

// testLogger logs to the test's output when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startServer runs a replica server on a loopback port. It is closed when
// the test ends, if the test did not close it.
func startServer(t testing.TB, dir string) (*mirror.Server, string) {
	t.Helper()
	srv, err := mirror.NewServer(secureServer(t, mirror.ServerOptions{Dir: dir, Logger: testLogger(t)}))
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv, l.Addr().String()
}

// openPrimary creates a pool for the workload.
func openPrimary(t testing.TB, dir string) *heap.Heap {
	t.Helper()
	h, err := heap.Open(filepath.Join(dir, "primary.pool"), &heap.Options{Size: poolSize})
	require.NoError(t, err)
	return h
}

// replicaFile returns the path of the only pool file of a replica
// directory.
func replicaFile(t testing.TB, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.pool"))
	require.NoError(t, err)
	require.Len(t, files, 1, "pool files in %s", dir)
	return files[0]
}

// checkReplica checks a replica's pool file offline, opens it with the
// heap API (read-only, so that it stays as it is) and returns the commit
// whose state it holds.
func checkReplica(t testing.TB, path string) uint64 {
	t.Helper()
	var problems []string
	require.NoError(t, recovery.CheckFile(path, func(p recovery.Problem) bool {
		problems = append(problems, p.String())
		return true
	}))
	require.Empty(t, problems, "replica %s fails its check", path)
	h, err := heap.Open(path, &heap.Options{ReadOnly: true, Timeout: 10 * time.Second})
	require.NoError(t, err)
	defer h.Close()
	var c uint64
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		var err error
		c, err = verify(tx)
		return err
	}))
	return c
}

// poolRegions returns the parts of a pool image that the heap's data
// lives in: the heap state, the type table, the undo log and the slabs.
// Header slots are left out: they hold the base the pool was mapped at.
func poolRegions(t testing.TB, img []byte) [][2]int {
	t.Helper()
	h, err := layout.DecodeHeader(img)
	if err != nil {
		h, err = layout.DecodeHeader(img[layout.SlotOff(1):])
	}
	require.NoError(t, err)
	return [][2]int{
		{layout.StateOff, layout.StateOff + layout.StateSize},
		{int(h.TypeOff), int(h.TypeOff + h.TypeSize)},
		{int(h.LogOff), int(h.LogOff + h.LogSize)},
		{int(h.SlabOff), int(h.Size)},
	}
}

// requireSameData compares the data regions of two pool images, then the
// whole images: a replica is a byte-for-byte copy of the primary at a
// commit, headers included.
func requireSameData(t testing.TB, want, got []byte) {
	t.Helper()
	require.Equal(t, len(want), len(got), "pool sizes")
	for _, r := range poolRegions(t, want) {
		a, b := want[r[0]:r[1]], got[r[0]:r[1]]
		if string(a) != string(b) {
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("pools differ at offset %d (region [%d, %d))", r[0]+i, r[0], r[1])
				}
			}
		}
	}
	require.True(t, string(want) == string(got), "pool headers differ")
}

// requireConverged checks the pool file of the stopped replica in dir:
// its data regions equal primary's, it passes the checker and holds the
// state after commit.
func requireConverged(t testing.TB, dir string, primary []byte, commit uint64) {
	t.Helper()
	path := replicaFile(t, dir)
	replica, err := os.ReadFile(path)
	require.NoError(t, err)
	requireSameData(t, primary, replica)
	assert.Equal(t, commit, checkReplica(t, path))
}

// flush waits until every replica acknowledged everything committed.
func flush(t testing.TB, m *mirror.Mirror) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, m.Flush(ctx))
}

// readLines sends each line of r to the returned channel, closed at EOF.
func readLines(r io.Reader) <-chan string {
	ch := make(chan string, 1<<16)
	go func() {
		defer close(ch)
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for {
			n, err := r.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				i := strings.IndexByte(string(buf), '\n')
				if i < 0 {
					break
				}
				ch <- string(buf[:i])
				buf = buf[i+1:]
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
					ch <- "read error: " + err.Error()
				}
				return
			}
		}
	}()
	return ch
}

// ackTap dials for a primary and keeps what the replica sends it, as a
// peer on the path would see it.
type ackTap struct {
	mu    sync.Mutex
	read  []byte
	conns []net.Conn
}

// cut closes the connections dialled, as a network failure would.
func (a *ackTap) cut() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
	a.conns = nil
}

func (a *ackTap) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.read = a.read[:0]
	a.conns = append(a.conns, c)
	a.mu.Unlock()
	return &tapConn{Conn: c, a: a}, nil
}

// last returns the chain value of the last acknowledgement seen.
func (a *ackTap) last(t testing.TB) wire.Chain {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var chain wire.Chain
	found := false
	for b := a.read; len(b) > 0; {
		f, n, err := wire.Decode(b)
		if err != nil {
			break
		}
		if f.Type == wire.TypeAck {
			chain, err = wire.DecodeAck(f.Payload)
			require.NoError(t, err)
			found = true
		}
		b = b[n:]
	}
	require.True(t, found, "no acknowledgement seen")
	return chain
}

type tapConn struct {
	net.Conn
	a *ackTap
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.a.mu.Lock()
	c.a.read = append(c.a.read, p[:n]...)
	c.a.mu.Unlock()
	return n, err
}
