package remote

import (
	"bytes"
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
)

// TestNodeStartsBesideDamagedFiles damages the files of three regions of
// a stopped node (a truncated region file, a writer file of garbage, a
// page flipped): the node starts, serves every page it can, sets aside
// the region it cannot open and reports all three, refuses the damaged
// page with an error naming region and offset, and scrubs find the same;
// once a write-back repairs the page, neither status nor scrub lists it.
func TestNodeStartsBesideDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	n, addr := startNode(t, NodeOptions{Dir: dir})
	ctx := testCtx(t)
	cl, err := dial(ctx, addr, nil)
	require.NoError(t, err)
	for _, name := range []string{"a", "b", "c"} {
		r, epoch, err := cl.create(ctx, name, 4*PageSize)
		require.NoError(t, err)
		_, _, err = cl.resolve(ctx, name, true, WriterID{1})
		require.NoError(t, err)
		require.NoError(t, cl.write(ctx, epoch, r.id, []run{{off: PageSize, data: []byte("page one of " + name)}}))
	}
	cl.close()
	require.NoError(t, n.Close())

	require.NoError(t, os.Truncate(regionPath(dir, "a"), 3*PageSize+100))
	require.NoError(t, os.WriteFile(metaPath(dir, "b"), []byte("garbage"), 0o600))
	f, err := os.OpenFile(regionPath(dir, "c"), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("X"), PageSize+3)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	n, addr = startNode(t, NodeOptions{Dir: dir})
	st := n.Status()
	require.Len(t, st.Problems, 3)
	assert.Equal(t, "a", st.Problems[0].Region)
	assert.Contains(t, st.Problems[0].Err, "set aside")
	assert.Equal(t, Problem{Region: "b", Offset: -1, Err: st.Problems[1].Err}, st.Problems[1])
	assert.Contains(t, st.Problems[1].Err, "writer file")
	assert.Equal(t, Problem{Region: "c", Offset: PageSize, Err: pageMismatch}, st.Problems[2])

	cl, err = dial(ctx, addr, nil)
	require.NoError(t, err)
	defer cl.close()
	_, _, err = cl.resolve(ctx, "a", false, WriterID{})
	assert.ErrorIs(t, err, ErrNodeFailed)
	assert.ErrorContains(t, err, "set aside")
	rb, epoch, err := cl.resolve(ctx, "b", false, WriterID{})
	require.NoError(t, err)
	assert.Equal(t, WriterID{}, rb.lastWriter, "a damaged writer file names no writer")
	page := make([]byte, PageSize)
	require.NoError(t, cl.read(ctx, epoch, rb.id, PageSize, page, prioDemand))
	assert.Equal(t, "page one of b", string(page[:13]))
	rc, _, err := cl.resolve(ctx, "c", false, WriterID{})
	require.NoError(t, err)
	require.NoError(t, cl.read(ctx, epoch, rc.id, 2*PageSize, page, prioDemand))
	err = cl.read(ctx, epoch, rc.id, PageSize, page, prioDemand)
	assert.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.ErrorContains(t, err, "region c: the page at offset 4096 does not match its checksum")

	var online []Problem
	require.NoError(t, n.Scrub(func(p Problem) { online = append(online, p) }))
	assert.Equal(t, st.Problems, online)

	// A write-back of the whole page, as a client repairing it from its
	// backup sends, repairs it: the status no longer lists it.
	_, epoch, err = cl.resolve(ctx, "c", true, WriterID{2})
	require.NoError(t, err)
	require.NoError(t, cl.write(ctx, epoch, rc.id, []run{{off: PageSize, data: bytes.Repeat([]byte("c"), PageSize)}}))
	assert.Equal(t, st.Problems[:2], n.Status().Problems)
	require.NoError(t, cl.read(ctx, epoch, rc.id, PageSize, page, prioDemand))
	require.NoError(t, n.Close())
	var offline []Problem
	require.NoError(t, ScrubDir(dir, func(p Problem) { offline = append(offline, p) }))
	require.Len(t, offline, 2, "the repaired page is good on disk too")
	assert.Equal(t, st.Problems[1:2], offline[1:])
	assert.Equal(t, "a", offline[0].Region)
}

// TestChecksumsAfterInterruptedWriteBack leaves a region as a crash in
// the middle of a write-back would: the pages it recorded as in flight
// changed, their checksums not. At the next start they are taken as
// they are; a page changed outside a write-back is still damage.
func TestChecksumsAfterInterruptedWriteBack(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, createRegionFile(dir, "r", 8*PageSize))
	r, _, err := openRegion(dir, "r", 0)
	require.NoError(t, err)
	r.sums.setIntent([][2]uint64{{1, 3}})
	copy(r.mem[PageSize+10:], "torn write-back")
	copy(r.mem[2*PageSize:], "another page of it")
	copy(r.mem[5*PageSize:], "rot")
	// The crash: nothing else is written.
	require.NoError(t, unix.Msync(r.mem, unix.MS_SYNC))
	require.NoError(t, r.sums.close())
	require.NoError(t, unix.Munmap(r.mem))
	require.NoError(t, r.f.Close())

	var offline []Problem
	require.NoError(t, ScrubDir(dir, func(p Problem) { offline = append(offline, p) }))
	assert.Equal(t, []Problem{{Region: "r", Offset: 5 * PageSize, Err: pageMismatch}}, offline)

	r, _, err = openRegion(dir, "r", 0)
	require.NoError(t, err)
	defer r.close()
	var found []Problem
	require.NoError(t, r.check(func(p Problem) { found = append(found, p) }))
	assert.Equal(t, offline, found)
	assert.Empty(t, r.sums.intent(), "the intent is settled at start")
	_, err = r.read(PageSize, 2*PageSize)
	assert.NoError(t, err)
	_, err = r.read(5*PageSize, 1)
	assert.ErrorIs(t, err, pmemgo.ErrCorrupt)
}

// TestWriteBackChecksums writes batches of overlapping runs, runs across
// pages and an empty run: the checksums the node records before the
// pages change match the pages once they did.
func TestWriteBackChecksums(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, createRegionFile(dir, "r", 16*PageSize))
	r, _, err := openRegion(dir, "r", 0)
	require.NoError(t, err)
	defer r.close()
	line := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	for _, runs := range [][]run{
		{{off: 0, data: line(1, 128)}, {off: 64, data: line(2, 64)}},
		{{off: 3*PageSize - 64, data: line(3, 3*PageSize)}, {off: 10 * PageSize, data: nil}},
		{{off: 9 * PageSize, data: line(4, 64)}, {off: 2 * PageSize, data: line(5, 64)}, {off: 9*PageSize + 32, data: line(6, 64)}},
	} {
		require.NoError(t, r.write(nil, runs))
		var found []Problem
		require.NoError(t, r.check(func(p Problem) { found = append(found, p) }))
		assert.Empty(t, found)
	}
	assert.Equal(t, line(2, 64), r.mem[64:128])
	assert.Equal(t, line(6, 64), r.mem[9*PageSize+32:9*PageSize+96])
}

// BenchmarkPageSum measures the checksum of one page, which the node
// computes for each page it serves and each page a write-back changes.
func BenchmarkPageSum(b *testing.B) {
	page := bytes.Repeat([]byte{1, 2, 3, 4}, PageSize/4)
	b.SetBytes(PageSize)
	var s uint64
	for b.Loop() {
		s += pageSum(page)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/page")
	_ = s
}

// TestRegionMappedWithinBudget: the node maps new regions in only while
// its budget holds them, so that clients creating regions cannot make it
// map more than the budget however many they create.
func TestRegionMappedWithinBudget(t *testing.T) {
	const pages = 64
	n, _ := startNode(t, NodeOptions{Dir: t.TempDir()})
	n.populate.Store(pages * PageSize * 3 / 2)
	resident := func(r *region) int {
		vec := make([]byte, len(r.mem)/PageSize)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&r.mem[0])), uintptr(len(r.mem)), uintptr(unsafe.Pointer(&vec[0])))
		require.Zero(t, errno, "mincore")
		k := 0
		for _, v := range vec {
			k += int(v & 1)
		}
		return k
	}
	a, err := n.create(createReq{name: "a", size: pages * PageSize})
	require.NoError(t, err)
	assert.Equal(t, pages, resident(a))
	b, err := n.create(createReq{name: "b", size: pages * PageSize})
	require.NoError(t, err)
	assert.Zero(t, resident(b), "past the budget, a region is left to fault in as read")
	assert.Equal(t, int64(pages*PageSize/2), n.populate.Load())
}

// TestRegionMappedAtCreate checks that a node maps every page of a
// region it creates, so that no read of the new region faults a page in.
func TestRegionMappedAtCreate(t *testing.T) {
	const pages = 64
	n, _ := startNode(t, NodeOptions{Dir: t.TempDir()})
	r, err := n.create(createReq{name: "r", size: pages * PageSize})
	require.NoError(t, err)
	vec := make([]byte, pages)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&r.mem[0])), uintptr(len(r.mem)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, errno, "mincore")
	for p, v := range vec {
		require.NotZero(t, v&1, "page %d of a region just created is not in memory", p)
	}
}
