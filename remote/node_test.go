package remote

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// startNode serves a node on loopback until the test ends.
func startNode(t testing.TB, opts NodeOptions) (*Node, string) {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.TLS == nil {
		opts.Insecure = true
	}
	n, err := NewNode(opts)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = n.Serve(l) }()
	t.Cleanup(func() { _ = n.Close() })
	return n, l.Addr().String()
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNodeReadWriteRestart(t *testing.T) {
	dir := t.TempDir()
	n, addr := startNode(t, NodeOptions{Dir: dir})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()

	r, epoch, err := cl.create(ctx, "pool", 64<<10)
	require.NoError(t, err)
	assert.Equal(t, n.Epoch(), epoch)
	_, _, err = cl.create(ctx, "pool", 64<<10)
	assert.ErrorIs(t, err, ErrExists)

	w := WriterID{1}
	_, _, err = cl.resolve(ctx, "pool", true, w)
	require.NoError(t, err)
	line := bytes.Repeat([]byte{0xab}, LineSize)
	require.NoError(t, cl.write(ctx, epoch, r.id, []run{{off: 4096 + 64, data: line}, {off: 0, data: []byte("hello")}}))

	page := make([]byte, PageSize)
	require.NoError(t, cl.read(ctx, epoch, r.id, 4096, page, prioDemand))
	assert.Equal(t, line, page[64:128])
	assert.Equal(t, make([]byte, 64), page[:64])

	// A second client cannot claim the region, nor write without a claim.
	cl2, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl2.close()
	_, _, err = cl2.resolve(ctx, "pool", true, WriterID{2})
	assert.ErrorIs(t, err, ErrBusy)
	assert.ErrorIs(t, cl2.write(ctx, epoch, r.id, []run{{off: 0, data: []byte("x")}}), ErrBusy)
	_, _, err = cl2.resolve(ctx, "nosuch", false, w)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, cl2.read(ctx, epoch, r.id, 64<<10-10, make([]byte, 20), prioDemand), ErrProtocol)

	st, err := cl2.status(ctx)
	require.NoError(t, err)
	require.Len(t, st.Regions, 1)
	assert.True(t, st.Regions[0].Claimed)
	assert.Equal(t, uint64(PageSize), st.BytesServed)

	// A node restarted from its files serves the same bytes, under a new
	// epoch that makes old handles stale, and remembers the last writer.
	require.NoError(t, n.Close())
	n2, addr2 := startNode(t, NodeOptions{Dir: dir})
	assert.NotEqual(t, epoch, n2.Epoch())
	cl3, err := dial(ctx, addr2, nil)
	require.NoError(t, err)
	defer cl3.close()
	assert.ErrorIs(t, cl3.read(ctx, epoch, r.id, 0, page, prioDemand), ErrStale)
	r2, epoch2, err := cl3.resolve(ctx, "pool", false, WriterID{})
	require.NoError(t, err)
	assert.Equal(t, w, r2.lastWriter)
	again := make([]byte, PageSize)
	require.NoError(t, cl3.read(ctx, epoch2, r2.id, 4096, again, prioDemand))
	assert.Equal(t, page, again)
	require.NoError(t, cl3.read(ctx, epoch2, r2.id, 0, again[:5], prioDemand))
	assert.Equal(t, "hello", string(again[:5]))
}

func TestNodeRegionLimit(t *testing.T) {
	_, addr := startNode(t, NodeOptions{MaxRegions: 2})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	for _, name := range []string{"a", "b"} {
		_, _, err := cl.create(ctx, name, PageSize)
		require.NoError(t, err)
	}
	_, _, err = cl.create(ctx, "c", PageSize)
	assert.ErrorIs(t, err, ErrNodeFull)
	assert.ErrorContains(t, err, "limit")
}

func TestQueuesDemandFirstWithBound(t *testing.T) {
	q := newQueues(false, 2)
	for i := range 3 {
		q.push(job{low: true, f: frame{id: uint64(100 + i)}})
	}
	for i := range 5 {
		q.push(job{f: frame{id: uint64(i)}})
	}
	var got []uint64
	for range 8 {
		j, ok := q.pop()
		require.True(t, ok)
		got = append(got, j.f.id)
		q.done(j)
	}
	// Two demand reads at most pass a waiting write-back.
	assert.Equal(t, []uint64{0, 1, 100, 2, 3, 101, 4, 102}, got)

	fifo := newQueues(true, 2)
	fifo.push(job{low: true, f: frame{id: 100}})
	fifo.push(job{f: frame{id: 0}})
	j, _ := fifo.pop()
	assert.Equal(t, uint64(100), j.f.id)
}

func TestNodeRejectsGarbage(t *testing.T) {
	n, addr := startNode(t, NodeOptions{})
	for _, b := range [][]byte{
		[]byte("not a frame at all, definitely not 48 bytes of header......"),
		appendFrame(nil, tRead, n.Epoch(), 1, []byte{1, 2, 3}),
		appendFrame(nil, tWrite, n.Epoch(), 1, le.AppendUint32(le.AppendUint32(nil, 0), 1<<30)),
		appendFrame(nil, tCreate, 0, 1, appendCreate(nil, createReq{size: 1 << 50, name: "big"})),
		appendFrame(nil, tCreate, 0, 1, appendCreate(nil, createReq{size: 4096, name: "../escape"})),
	} {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_, err = c.Write(b)
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		f, err := newFrameReader(c).next()
		c.Close()
		if err == nil {
			assert.Equal(t, tError, f.t)
		}
	}
	st := n.Status()
	assert.Empty(t, st.Regions)
}

func TestBatchesFitTheLimit(t *testing.T) {
	big := make([]byte, 10*LineSize)
	runs := []run{{off: 0, data: big}, {off: 4096, data: big[:LineSize]}, {off: 8192, data: big}}
	limit := 8 + 12 + 4*LineSize
	got := batches(runs, limit)
	var total int
	next := map[uint64]bool{}
	for _, b := range got {
		require.LessOrEqual(t, writeSize(b), limit)
		for _, r := range b {
			total += len(r.data)
			next[r.off] = true
		}
	}
	assert.Equal(t, 21*LineSize, total)
	assert.True(t, next[0] && next[4*LineSize] && next[4096] && next[8192])
	assert.Len(t, batches(runs, MaxWrite), 1)
}

// BenchmarkNodeWriteBack measures a write-back acknowledged by a node in
// this process, durable in its files: one line, and a line in each of
// 16 pages.
func BenchmarkNodeWriteBack(b *testing.B) {
	for _, pages := range []int{1, 16} {
		b.Run(fmt.Sprintf("pages=%d", pages), func(b *testing.B) {
			_, addr := startNode(b, NodeOptions{})
			ctx := testCtx(b)
			cl, err := dial(ctx, addr, nil)
			require.NoError(b, err)
			defer cl.close()
			r, epoch, err := cl.create(ctx, "r", 1<<20)
			require.NoError(b, err)
			_, _, err = cl.resolve(ctx, "r", true, WriterID{1})
			require.NoError(b, err)
			line := bytes.Repeat([]byte{7}, LineSize)
			runs := make([]run, pages)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				for p := range runs {
					runs[p] = run{off: uint64((i*pages+p)%256)*PageSize + uint64(i%64)*LineSize, data: line}
				}
				if err := cl.write(ctx, epoch, r.id, runs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/write-back")
		})
	}
}

func TestNodeTotalSizeLimit(t *testing.T) {
	dir := t.TempDir()
	_, addr := startNode(t, NodeOptions{Dir: dir, MaxBytes: 3 * PageSize})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	a, epoch, err := cl.create(ctx, "a", 2*PageSize)
	require.NoError(t, err)
	_, _, err = cl.create(ctx, "b", 2*PageSize)
	assert.ErrorIs(t, err, ErrNodeFull)
	assert.ErrorContains(t, err, "limit is 12288")
	_, _, err = cl.create(ctx, "c", PageSize)
	require.NoError(t, err, "a region that fits the rest of the limit")
	_, _, err = cl.create(ctx, "d", PageSize)
	assert.ErrorIs(t, err, ErrNodeFull)

	// The refused regions left nothing behind, and the others are served.
	_, _, err = cl.resolve(ctx, "b", false, WriterID{})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.NoFileExists(t, regionPath(dir, "b"))
	page := make([]byte, PageSize)
	require.NoError(t, cl.read(ctx, epoch, a.id, 0, page, prioDemand))
}

// TestRegionPagesReserved checks that a region's pages and checksums are
// reserved on the file system when it is created, and when a node starts
// with a region file that has holes (made by an earlier release): the
// node writes them through shared mappings, where a page without room
// would be a SIGBUS.
func TestRegionPagesReserved(t *testing.T) {
	dir := t.TempDir()
	if !fallocates(t, dir) {
		t.Skip("the file system of the test's directory cannot reserve space")
	}
	n, addr := startNode(t, NodeOptions{Dir: dir})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	const size = 256 * PageSize
	_, _, err = cl.create(ctx, "r", size)
	require.NoError(t, err)
	assertAllocated(t, regionPath(dir, "r"), size)
	assertAllocated(t, sumsPath(dir, "r"), sumsHeader+8*size/PageSize)
	cl.close()
	require.NoError(t, n.Close())

	// Punch holes, as an earlier release's sparse files had.
	for _, p := range []string{regionPath(dir, "r"), sumsPath(dir, "r")} {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		require.NoError(t, err)
		fi, err := f.Stat()
		require.NoError(t, err)
		require.NoError(t, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, PageSize, fi.Size()-PageSize))
		require.NoError(t, f.Close())
	}
	startNode(t, NodeOptions{Dir: dir})
	assertAllocated(t, regionPath(dir, "r"), size)
	assertAllocated(t, sumsPath(dir, "r"), sumsHeader+8*size/PageSize)
}

// fallocates reports whether the file system of dir reserves space.
func fallocates(t *testing.T, dir string) bool {
	f, err := os.CreateTemp(dir, "probe")
	require.NoError(t, err)
	defer os.Remove(f.Name())
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), 0, 0, PageSize) == nil
}

// assertAllocated checks that the file at path has at least n bytes of
// blocks allocated.
func assertAllocated(t *testing.T, path string, n int64) {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	assert.GreaterOrEqual(t, st.Blocks*512, n, "blocks allocated to %s", path)
}

// TestRegionFileShrunk shrinks a region's file under a running node, as
// another process or a failing disk could: reads and write-backs of the
// pages gone fail with an error, and the node goes on serving.
func TestRegionFileShrunk(t *testing.T) {
	dir := t.TempDir()
	_, addr := startNode(t, NodeOptions{Dir: dir})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	r, epoch, err := cl.create(ctx, "r", 4*PageSize)
	require.NoError(t, err)
	_, _, err = cl.resolve(ctx, "r", true, WriterID{1})
	require.NoError(t, err)
	require.NoError(t, os.Truncate(regionPath(dir, "r"), PageSize))

	err = cl.write(ctx, epoch, r.id, []run{{off: 2 * PageSize, data: []byte("lost")}})
	assert.ErrorIs(t, err, ErrNodeFailed)
	page := make([]byte, PageSize)
	assert.ErrorIs(t, cl.read(ctx, epoch, r.id, 3*PageSize, page, prioDemand), ErrNodeFailed)
	require.NoError(t, cl.write(ctx, epoch, r.id, []run{{off: 64, data: []byte("kept")}}))
	require.NoError(t, cl.read(ctx, epoch, r.id, 0, page, prioDemand))
	assert.Equal(t, "kept", string(page[64:68]))
}

// TestNodeTotalSizeCountsSetAside: a region set aside at start still
// takes its room, so it counts toward MaxBytes.
func TestNodeTotalSizeCountsSetAside(t *testing.T) {
	dir := t.TempDir()
	n, addr := startNode(t, NodeOptions{Dir: dir})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	_, _, err = cl.create(ctx, "a", 4*PageSize)
	require.NoError(t, err)
	cl.close()
	require.NoError(t, n.Close())
	require.NoError(t, os.Truncate(regionPath(dir, "a"), 3*PageSize+100)) // set aside at start

	n, addr = startNode(t, NodeOptions{Dir: dir, MaxBytes: 5 * PageSize})
	require.Len(t, n.Status().Problems, 1)
	cl, err = dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	_, _, err = cl.create(ctx, "x", 2*PageSize)
	assert.ErrorIs(t, err, ErrNodeFull, "the set-aside region's 3 pages and 100 bytes count")
	_, _, err = cl.create(ctx, "y", PageSize)
	require.NoError(t, err)
}

// TestNodeClosesIdleConnections: a connection that holds no write claim
// and sends nothing for the idle timeout is closed, so that a silent
// client gives its slot back; one that holds a claim stays however long
// it idles, and gives up nothing; one whose claim was released idles out
// in turn.
func TestNodeClosesIdleConnections(t *testing.T) {
	const idle = 300 * time.Millisecond
	n, addr := startNode(t, NodeOptions{IdleTimeout: idle})
	ctx := testCtx(t)
	writer, r, epoch := claimNew(t, addr, "pool")
	reader, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer reader.close()
	page := make([]byte, PageSize)
	require.NoError(t, reader.read(ctx, epoch, r.id, 0, page, prioDemand))
	require.Equal(t, 2, connCount(n))

	time.Sleep(4 * idle)
	err = reader.read(ctx, epoch, r.id, 0, page, prioDemand)
	require.Error(t, err, "the silent reader's connection is closed")
	require.NoError(t, writer.write(ctx, epoch, r.id, []run{{off: 0, data: []byte("still here")}}), "the claim's connection stays")
	st := n.Status()
	require.Len(t, st.Regions, 1)
	assert.True(t, st.Regions[0].Claimed)
	// The reader saw its connection closed a moment before the node
	// forgot it.
	require.Eventually(t, func() bool { return connCount(n) == 1 }, 10*idle, idle/10)

	require.NoError(t, writer.release(ctx, epoch, r.id))
	require.Eventually(t, func() bool { return connCount(n) == 0 }, 10*idle, idle/10, "a released claim's connection idles out")
}

// TestNodeIdleTimeoutOff: a negative idle timeout keeps silent
// connections.
func TestNodeIdleTimeoutOff(t *testing.T) {
	n, addr := startNode(t, NodeOptions{IdleTimeout: -1})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	_, _, err = cl.create(ctx, "pool", 64<<10)
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond)
	_, err = cl.status(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, connCount(n))
}

// claimNew connects to the node at addr, creates a 64 KiB region name and
// claims it for writing; the connection is closed at the test's end.
func claimNew(t *testing.T, addr, name string) (*client, regionInfo, uint64) {
	t.Helper()
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cl.close() })
	r, epoch, err := cl.create(ctx, name, 64<<10)
	require.NoError(t, err)
	_, _, err = cl.resolve(ctx, name, true, WriterID{1})
	require.NoError(t, err)
	return cl, r, epoch
}

// connCount returns how many connections n serves.
func connCount(n *Node) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

// TestFetcherReconnectsAfterIdleClose: a fault worker's connection that
// the node closed for idling is replaced at the next read, which
// succeeds: the node is not taken for failed.
func TestFetcherReconnectsAfterIdleClose(t *testing.T) {
	const idle = 200 * time.Millisecond
	n, addr := startNode(t, NodeOptions{IdleTimeout: idle})
	cl, r, epoch := claimNew(t, addr, "pool")
	require.NoError(t, cl.write(testCtx(t), epoch, r.id, []run{{off: PageSize, data: []byte("page one")}}))

	a := &agent{cfg: agentConfig{Addr: addr, Name: "pool", Region: 64 << 10, Insecure: true}}
	var f fetcher
	defer f.close()
	page := make([]byte, PageSize)
	require.NoError(t, f.read(a, 0, page, time.Now().Add(5*time.Second)))
	require.Eventually(t, func() bool { return connCount(n) == 1 }, 20*idle, idle/10, "the fetcher's connection idles out")
	require.NoError(t, f.read(a, PageSize, page, time.Now().Add(5*time.Second)))
	assert.Equal(t, "page one", string(page[:8]))
}

// TestNodeClosesTricklingClient: a hostile client that sends part of a
// frame header and then nothing is closed after the idle timeout, as a
// silent one is: the bound covers the whole frame.
func TestNodeClosesTricklingClient(t *testing.T) {
	const idle = 200 * time.Millisecond
	n, addr := startNode(t, NodeOptions{IdleTimeout: idle})
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte(frameMagic + "\x01"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*idle)))
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the node closes the connection")
	require.Eventually(t, func() bool { return connCount(n) == 0 }, 10*idle, idle/10)
}
