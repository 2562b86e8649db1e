package remote_test

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// touched keeps the compiler from dropping a load that faults a page in.
var touched byte

func newKey(t *testing.T) []byte {
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	return key
}

// addMarker commits a node named marker at the head of the graph.
func addMarker(t *testing.T, h *heap.Heap, marker string) {
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		g, err := heap.Root[Graph](tx)
		if err != nil {
			return err
		}
		nd, err := heap.New[Node](tx)
		if err != nil {
			return err
		}
		nd.ID, nd.Next = -1, g.Head
		if nd.Name, err = heap.NewString(tx, marker); err != nil {
			return err
		}
		return heap.Set(tx, &g.Head, nd)
	}))
}

func headName(t *testing.T, h *heap.Heap) string {
	var name string
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		g, err := heap.Root[Graph](tx)
		name = g.Head.Name
		return err
	}))
	return name
}

// filesContain reports whether any file under dir holds marker.
func filesContain(t *testing.T, dir string, marker []byte) bool {
	found := false
	require.NoError(t, filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		found = found || bytes.Contains(b, marker)
		return err
	}))
	return found
}

// TestSealedHoldsNoPlaintext writes a marker through the application,
// then reads it back from a client with an empty backup at another
// address: with a key, neither the node's files, nor the backups, nor the
// bytes on the wire hold it; without one, all three do.
func TestSealedHoldsNoPlaintext(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	for _, tc := range []struct {
		name   string
		sealed bool
	}{{"plain", false}, {"sealed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			node := startNode(t, t.TempDir(), "127.0.0.1:0")
			proxy := startProxy(t, node.addr)
			proxy.record.Store(true)
			url := remote.Scheme + proxy.addr + "/g"
			dir := t.TempDir()
			var key []byte
			if tc.sealed {
				key = newKey(t)
			}
			marker := "MARKER-" + tc.name + "-5f3a9c1e77d2"
			opts := openOpts(dir, "a.backup")
			opts.Size, opts.Heap.Key = 8<<20, key
			h, err := remote.Open(url, opts)
			require.NoError(t, err)
			build(t, h, 20)
			addMarker(t, h, marker)
			require.NoError(t, h.Close())

			opts = openOpts(dir, "b.backup")
			opts.Heap.Key, opts.Heap.ForceRelocate = key, true
			h, err = remote.Open(url, opts)
			require.NoError(t, err)
			assert.Equal(t, marker, headName(t, h))
			build(t, h, 5)
			require.NoError(t, h.Close())

			m := []byte(marker)
			assert.Equal(t, !tc.sealed, filesContain(t, node.dir, m), "node's files")
			assert.Equal(t, !tc.sealed, filesContain(t, dir, m), "backups")
			assert.Equal(t, !tc.sealed, proxy.saw(m), "wire")
		})
	}
}

// sealedRegion starts a node and makes on it a sealed pool, region g,
// with its backup in dir, built by fill; it returns the node and the key.
func sealedRegion(t *testing.T, dir string, fill func(h *heap.Heap)) (*nodeProc, []byte) {
	t.Helper()
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	key := newKey(t)
	opts := openOpts(dir, "a.backup")
	opts.Size, opts.Heap.Key = 8<<20, key
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	fill(h)
	require.NoError(t, h.Close())
	return node, key
}

// flipRecord flips a bit in the record at file offset at of the node's
// region g, which must have been written.
func flipRecord(t *testing.T, node *nodeProc, at int) {
	t.Helper()
	path := filepath.Join(node.dir, "g.region")
	region, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotEqual(t, make([]byte, 128), region[at:at+128], "the record at file offset %d was never written", at)
	region[at+40] ^= 1
	require.NoError(t, os.WriteFile(path, region, 0o600))
}

// TestSealedBitFlipOnNode flips a bit in a record of the node's region
// file and makes the node serve it as good, as a node that lost its
// checksum file (which it then makes from the region's bytes) would: the
// fetch's authentication detects it, names the offset, the page is
// served from the backup, which holds it sealed too, and the backup's
// copy repairs the node's. (TestBitFlipScrubAndRepair has the node find
// the damage.)
func TestSealedBitFlipOnNode(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	dir := t.TempDir()
	node, key := sealedRegion(t, dir, func(h *heap.Heap) { build(t, h, 30) })

	// The last record written, past the pages an open copies first.
	regionPath := filepath.Join(node.dir, "g.region")
	region, err := os.ReadFile(regionPath)
	require.NoError(t, err)
	const headerSize, recordSize = 4096, 128
	at := -1
	for off := len(region) - recordSize; off >= 64<<10; off -= recordSize {
		if !bytes.Equal(region[off:off+recordSize], make([]byte, recordSize)) {
			at = off
			break
		}
	}
	require.Positive(t, at)
	flipRecord(t, node, at)
	require.NoError(t, os.Remove(filepath.Join(node.dir, "g.sums")))
	node.restart(t)

	var logs syncBuffer
	opts := openOpts(dir, "a.backup")
	opts.Heap.Key = key
	opts.Heap.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	poolOff := (at - headerSize) / 2
	within(t, time.Minute, func() {
		touched = h.Device().Bytes()[poolOff]
		verify(t, h, 30)
	})
	// The warning comes from the worker by way of the keeper, after the
	// page was installed.
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "does not authenticate") })
	assert.Contains(t, logs.String(), "file offset "+itoa(at))
	waitFor(t, 20*time.Second, func() bool {
		return remote.Resynced(h.Device()) && sameRange(t, regionPath, opts.Backup, at, recordSize)
	})
	require.NoError(t, h.Close())
}

// sameRange reports whether files a and b hold the same n bytes at off.
func sameRange(t *testing.T, a, b string, off, n int) bool {
	t.Helper()
	read := func(path string) []byte {
		f, err := os.Open(path)
		require.NoError(t, err)
		defer f.Close()
		buf := make([]byte, n)
		_, err = f.ReadAt(buf, int64(off))
		require.NoError(t, err)
		return buf
	}
	return bytes.Equal(read(a), read(b))
}

// TestSealedBitFlipWithoutBackup damages, on the node, a record that no
// backup holds: the open is from a new machine's empty backup. The page
// cannot be served, so the goroutine that touches it faults (the agent
// poisons the page) instead of waiting for ever, the pool logs why,
// naming the file offset, and the other pages are still served.
func TestSealedBitFlipWithoutBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	// A 64 KiB object of its own: its middle pages hold nothing an open
	// reads, so the test touches them first.
	var poolOff int
	node, key := sealedRegion(t, t.TempDir(), func(h *heap.Heap) {
		build(t, h, 30)
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			b, err := heap.MakeSlice[byte](tx, 64<<10, 64<<10)
			for i := range b {
				b[i] = 0xAB
			}
			poolOff = int(uintptr(unsafe.Pointer(&b[32<<10])) - uintptr(unsafe.Pointer(&h.Device().Bytes()[0])))
			return err
		}))
	})
	at := 4096 + poolOff/64*128
	flipRecord(t, node, at)
	node.restart(t)

	var logs syncBuffer
	opts := openOpts(t.TempDir(), "b.backup")
	opts.Heap.Key = key
	opts.Heap.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	var fault any
	within(t, time.Minute, func() {
		defer func() { fault = recover() }()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		touched = h.Device().Bytes()[poolOff]
	})
	require.NotNil(t, fault, "touching a page that cannot be served must fault")
	addr, ok := fault.(interface{ Addr() uintptr })
	require.True(t, ok, "a memory fault: %v", fault)
	page := uintptr(unsafe.Pointer(&h.Device().Bytes()[poolOff])) &^ (4096 - 1)
	assert.Equal(t, page, addr.Addr()&^(4096-1))
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "cannot be served") })
	assert.Contains(t, logs.String(), "region g: the page at offset "+itoa(at&^4095)+" does not match its checksum")
	// The rest of the pool is still served: the first page holds the root.
	within(t, time.Minute, func() { touched = h.Device().Bytes()[0] })
	require.NoError(t, h.Close())
}

// TestSealedWrongKey opens a sealed remote pool with another key, and a
// plain one with a key: both are refused with ErrBadKey.
func TestSealedWrongKey(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	opts := openOpts(dir, "a.backup")
	opts.Size, opts.Heap.Key = 8<<20, newKey(t)
	h, err := remote.Open(node.url("sealed"), opts)
	require.NoError(t, err)
	require.NoError(t, h.Close())
	createGraph(t, node.url("plain"), t.TempDir(), 1)

	for _, name := range []string{"sealed", "plain"} {
		opts := openOpts(dir, name+".other.backup")
		opts.Heap.Key = newKey(t)
		_, err := remote.Open(node.url(name), opts)
		assert.ErrorIs(t, err, pmemgo.ErrBadKey, name)
	}
}

// TestSealedResync stops the node while a sealed pool commits: the
// commits reach the backup alone, and once the node answers again it is
// handed their records, without the key, and converges with the backup
// byte for byte.
func TestSealedResync(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	key := newKey(t)
	opts := openOpts(dir, "a.backup")
	opts.Size, opts.Heap.Key, opts.RemoteTimeout = 8<<20, key, 50*time.Millisecond
	opts.LocalCap = 16 << 10
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	build(t, h, 20)

	require.NoError(t, node.cmd.Process.Signal(syscall.SIGSTOP))
	within(t, time.Minute, func() { build(t, h, 10) })
	st, _ := remote.Stats(h.Device())
	assert.Positive(t, st.SuspectFences)
	assert.Positive(t, st.Evicted, "clean pages, compared through their sealed backup copy, should have been dropped")
	require.NoError(t, node.cmd.Process.Signal(syscall.SIGCONT))
	waitFor(t, 20*time.Second, func() bool { return remote.Resynced(h.Device()) })
	require.NoError(t, h.Close())
	sameBytes(t, node.dir, "g", opts.Backup)

	opts = openOpts(dir, "b.backup")
	opts.Heap.Key = key
	h, err = remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	verify(t, h, 30)
	require.NoError(t, h.Close())

	// A download is the sealed pool file, which opens with the key.
	f, err := os.Create(filepath.Join(t.TempDir(), "copy.pool"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, remote.Download(t.Context(), node.url("g"), nil, f))
	h, err = heap.Open(f.Name(), &heap.Options{Key: key, ReadOnly: true})
	require.NoError(t, err)
	verify(t, h, 30)
	require.NoError(t, h.Close())
}

// TestSealedHeadFlipOnNode flips a bit in a record of the first pages of
// the node's region, which an open copies into the backup: an empty
// backup makes the open fail naming the offset; a complete backup keeps
// its own copy, the pool opens, and the node's copy is repaired from it,
// so that an empty backup opens too.
func TestSealedHeadFlipOnNode(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	dir := t.TempDir()
	node, key := sealedRegion(t, dir, func(h *heap.Heap) { build(t, h, 10) })
	const at = 4096 + 128 // the record of the pool's second line
	flipRecord(t, node, at)

	opts := openOpts(dir, "cold.backup")
	opts.Heap.Key = key
	_, err := remote.Open(node.url("g"), opts)
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), "region g: the page at offset 4096 does not match its checksum")

	opts = openOpts(dir, "a.backup")
	opts.Heap.Key = key
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	verify(t, h, 10)
	require.NoError(t, h.Close())

	opts = openOpts(dir, "cold2.backup")
	opts.Heap.Key = key
	h, err = remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	verify(t, h, 10)
	require.NoError(t, h.Close())
}
