package heap_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

// The tests in this file enumerate crash points: with the emulated device,
// they take the image a crash would leave at every flush and fence of an
// operation (and variants in which written-but-unflushed lines did reach
// the media), reopen each image at a new base, and assert invariant 1 of
// DESIGN.md: the state is exactly the one before or the one after the
// operation, with every pointer valid and nothing leaked.

const crashPoolSize = 2 << 20

// capture records the distinct crash images seen while armed.
type capture struct {
	emu    *device.Emulator
	armed  bool
	images [][]byte
	seen   map[uint64]bool
	points int // crash images taken, identical ones included
	// variants adds, at each point, the image in which every dirty line
	// reached the media and, when few lines are dirty, each single one;
	// with sealed, whole records of a sealed file instead of lines (see
	// newSealedCapture).
	variants, sealed bool
}

func newCapture(variants bool) *capture {
	c := &capture{variants: variants, seen: map[uint64]bool{}}
	c.emu = &device.Emulator{Hook: c.hook}
	return c
}

func (c *capture) add(img []byte) {
	c.points++
	if sum := xxhash.Sum64(img); !c.seen[sum] {
		c.seen[sum] = true
		c.images = append(c.images, img)
	}
}

func (c *capture) hook(device.Event) {
	if !c.armed {
		return
	}
	d := c.emu.Device()
	c.add(d.CrashImage(nil))
	if !c.variants {
		return
	}
	dirty := d.DirtyLines()
	if len(dirty) == 0 {
		return
	}
	if c.sealed {
		recs := recordLines(dirty)
		var all []int
		for _, r := range recs {
			all = append(all, r...)
		}
		c.add(d.CrashImage(all))
		if len(recs) <= 4 {
			for _, r := range recs {
				c.add(d.CrashImage(r))
			}
		}
		return
	}
	c.add(d.CrashImage(dirty))
	if len(dirty) <= 8 {
		for _, l := range dirty {
			c.add(d.CrashImage([]int{l}))
		}
	}
}

// snapshot describes a pool's logical content independent of its base:
// the list from the root, each node's fields, and object counts per type,
// so that an object allocated but unreachable shows as a difference.
func snapshot(t testing.TB, h *heap.Heap) string {
	t.Helper()
	var b strings.Builder
	err := h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil || root == nil {
			fmt.Fprintf(&b, "root=%v err=%v\n", root, err)
			return nil
		}
		fmt.Fprintf(&b, "count=%d\n", root.Count)
		seen := map[*Node]bool{}
		for n := root.Head; n != nil && !seen[n]; n = n.Next {
			seen[n] = true
			fmt.Fprintf(&b, "node %d %q tags=%v kids=", n.Key, n.Name, n.Tags)
			for _, k := range n.Kids {
				if k == nil {
					b.WriteString("- ")
				} else {
					fmt.Fprintf(&b, "%d ", k.Key)
				}
			}
			b.WriteString("\n")
		}
		return nil
	})
	require.NoError(t, err)
	var types []string
	for _, ts := range h.Stats().Types {
		if ts.Objects > 0 {
			types = append(types, fmt.Sprintf("%s:%d", ts.Name, ts.Objects))
		}
	}
	sort.Strings(types)
	fmt.Fprintf(&b, "objects %v\n", types)
	return b.String()
}

// addNodes links n new nodes at the head of the root's list.
func addNodes(tx *heap.Tx, first, n int) error {
	root, err := heap.Root[Root](tx)
	if err != nil {
		return err
	}
	if err := heap.Add(tx, root); err != nil {
		return err
	}
	for i := first; i < first+n; i++ {
		node, err := heap.New[Node](tx)
		if err != nil {
			return err
		}
		node.Key = uint64(i)
		if node.Name, err = heap.NewString(tx, fmt.Sprintf("node-%d", i)); err != nil {
			return err
		}
		if node.Tags, err = heap.MakeSlice[uint32](tx, 2, 4); err != nil {
			return err
		}
		node.Tags[0], node.Tags[1] = uint32(i), uint32(i*i)
		node.Next = root.Head
		node.Kids[0] = node
		node.Kids[1] = root.Head
		root.Head = node
		root.Count++
	}
	return nil
}

// removeHead unlinks and frees the first node of the list.
func removeHead(tx *heap.Tx) error {
	root, err := heap.Root[Root](tx)
	if err != nil {
		return err
	}
	n := root.Head
	if n == nil {
		return errors.New("empty list")
	}
	if err := heap.Add(tx, root); err != nil {
		return err
	}
	root.Head = n.Next
	root.Count--
	if next := root.Head; next != nil {
		// The next node's kids may point at the freed node: clear them.
		if err := heap.Add(tx, &next.Kids); err != nil {
			return err
		}
		for i, k := range next.Kids {
			if k == n {
				next.Kids[i] = nil
			}
		}
	}
	return errors.Join(heap.FreeString(tx, n.Name), heap.FreeSlice(tx, n.Tags), heap.Free(tx, n))
}

// renameAll rewrites fields of every node in place.
func renameAll(tx *heap.Tx) error {
	root, err := heap.Root[Root](tx)
	if err != nil {
		return err
	}
	for n := root.Head; n != nil; n = n.Next {
		if err := heap.Set(tx, &n.Key, n.Key+1000); err != nil {
			return err
		}
		if err := heap.AddSlice(tx, n.Tags); err != nil {
			return err
		}
		n.Tags[1]++
	}
	return nil
}

// renameAllBatched is renameAll with every node logged by one AddAll, and
// their tags by one AddRanges: one fence before all the changes.
func renameAllBatched(tx *heap.Tx) error {
	root, err := heap.Root[Root](tx)
	if err != nil {
		return err
	}
	var nodes []*Node
	var tags []heap.Range
	for n := root.Head; n != nil; n = n.Next {
		nodes = append(nodes, n)
		tags = append(tags, heap.Range{Ptr: unsafe.Pointer(unsafe.SliceData(n.Tags)), Len: uintptr(len(n.Tags)) * 4})
	}
	if err := heap.AddAll(tx, nodes...); err != nil {
		return err
	}
	if err := tx.AddRanges(tags...); err != nil {
		return err
	}
	for _, n := range nodes {
		n.Key += 1000
		n.Tags[1]++
	}
	return nil
}

// crashCase is one operation whose crash points are enumerated.
type crashCase struct {
	name  string
	setup func(tx *heap.Tx) error
	op    func(tx *heap.Tx) error
	// prep, when set, runs in a transaction of its own after setup.
	prep func(tx *heap.Tx) error
	// fails is set when op returns an error on purpose: the transaction
	// aborts, and only the state before is acceptable.
	fails bool
}

var errAbort = errors.New("abort on purpose")

func crashCases() []crashCase {
	three := func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }
	return []crashCase{
		{name: "alloc", setup: three, op: func(tx *heap.Tx) error { return addNodes(tx, 10, 2) }},
		{name: "alloc-first", setup: func(*heap.Tx) error { return nil }, op: three},
		{name: "free", setup: three, op: removeHead},
		{name: "free-all", setup: func(tx *heap.Tx) error { return addNodes(tx, 0, 1) }, op: removeHead},
		{name: "commit", setup: three, op: renameAll},
		{name: "commit-batched", setup: three, op: renameAllBatched},
		{name: "free-extent", setup: threeBig, op: removeHead},
		{name: "reuse-extent", setup: threeBigBelow, prep: smallTags, op: bigTags},
		{name: "abort", setup: three, fails: true, op: func(tx *heap.Tx) error {
			return errors.Join(renameAll(tx), addNodes(tx, 20, 2), removeHead(tx), errAbort)
		}},
	}
}

// TestCrashTransactions runs each case on a heap opened from its slab
// summary, whose slabs are validated as the operation first uses them,
// and on one opened with every slab header validated (full), each on
// persistent memory's semantics and on a device that buffers stores.
func TestCrashTransactions(t *testing.T) {
	total := 0
	for _, tc := range crashCases() {
		for _, full := range []bool{false, true} {
			for _, buffered := range []bool{false, true} {
				name := tc.name
				if full {
					name += "/full"
				}
				if buffered {
					name += "/buffered"
				}
				t.Run(name, func(t *testing.T) { total += crashTransaction(t, tc, full, buffered) })
			}
		}
	}
	t.Logf("transactions: %d crash images checked", total)
}

// crashTransaction enumerates the crash points of tc and returns the
// number of distinct images checked.
func crashTransaction(t *testing.T, tc crashCase, full, buffered bool) int {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: crashPoolSize})
	require.NoError(t, err)
	require.NoError(t, h.Update(tc.setup))
	if tc.prep != nil {
		require.NoError(t, h.Update(tc.prep))
	}
	before := snapshot(t, h)
	require.NoError(t, h.Close())

	c := newCapture(true)
	c.emu.Buffered = buffered
	h, err = heap.Open(path, &heap.Options{Device: c.emu, FullValidation: full})
	require.NoError(t, err)
	// Opened from the slab summary unless full or the base was
	// taken: the operation then validates each slab when it first
	// uses it.
	lazy := h.Recovery().FromSummary
	require.False(t, lazy && full)
	c.armed = true
	err = h.Update(tc.op)
	c.armed = false
	if tc.fails {
		require.ErrorIs(t, err, errAbort)
	} else {
		require.NoError(t, err)
	}
	after := snapshot(t, h)
	if tc.fails {
		require.Equal(t, before, after, "a failed transaction must leave the state before")
	} else {
		require.NotEqual(t, before, after, "the operation must change something")
	}
	require.NoError(t, h.Close())
	require.NotEmpty(t, c.images)

	for i, img := range c.images {
		got := reopenImage(t, dir, img)
		if got != before && got != after {
			t.Fatalf("image %d of %d: state is neither before nor after:\n--- got\n%s--- before\n%s--- after\n%s", i, len(c.images), got, before, after)
		}
	}
	t.Logf("%s: %d crash images taken, %d distinct ones checked (slabs validated lazily: %v)", tc.name, c.points, len(c.images), lazy)
	return len(c.images)
}

// reopenImage writes img to a file, opens it at a new base (which
// recovers it), closes it, checks it, and returns the snapshot of the
// recovered pool. The check comes before the snapshot walks any pointer.
func reopenImage(t *testing.T, dir string, img []byte) string {
	t.Helper()
	p := filepath.Join(dir, "image.pool")
	require.NoError(t, os.WriteFile(p, img, 0o600))
	h, err := heap.Open(p, &heap.Options{ForceRelocate: true})
	require.NoError(t, err, "reopening a crash image")
	require.NoError(t, h.Close())
	checkPool(t, p)
	h, err = heap.Open(p, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	return snapshot(t, h)
}

// TestCrashSwizzle enumerates the crash points of a relocating open, on
// the device that swizzles through the mapping and on one that copies the
// pool through device.FileAccess, as the msync device does.
func TestCrashSwizzle(t *testing.T) {
	for _, copies := range []bool{false, true} {
		for _, buffered := range []bool{false, true} {
			t.Run(fmt.Sprintf("file-access=%v/buffered=%v", copies, buffered), func(t *testing.T) { crashSwizzle(t, copies, buffered) })
		}
	}
}

func crashSwizzle(t *testing.T, copies, buffered bool) {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: crashPoolSize, SlabSize: 16 << 10})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 200) }))
	want := snapshot(t, h)
	require.NoError(t, h.Close())

	c := newCapture(true)
	c.emu.FileAccess, c.emu.Buffered = copies, buffered
	c.armed = true
	h, err = heap.Open(path, &heap.Options{Device: c.emu, ForceRelocate: true})
	c.armed = false
	require.NoError(t, err)
	require.Greater(t, h.Recovery().Swizzle.Slabs, 3, "the swizzle must span several slabs")
	require.Equal(t, want, snapshot(t, h))
	require.NoError(t, h.Close())

	double := 0
	for i, img := range c.images {
		require.Equal(t, want, reopenImage(t, dir, img), "image %d", i)
		// Crash again in the middle of the resumed swizzle, then open at yet
		// another base.
		p := filepath.Join(dir, "again.pool")
		require.NoError(t, os.WriteFile(p, img, 0o600))
		c2 := newCapture(false)
		c2.emu.FileAccess, c2.emu.Buffered = copies, buffered
		c2.armed = true
		h, err := heap.Open(p, &heap.Options{Device: c2.emu, ForceRelocate: true})
		c2.armed = false
		require.NoError(t, err)
		require.NoError(t, h.Close())
		for _, img2 := range []([]byte){c2.images[len(c2.images)/3], c2.images[2*len(c2.images)/3]} {
			require.Equal(t, want, reopenImage(t, dir, img2))
			double++
		}
	}
	t.Logf("swizzle: %d crash images taken, %d distinct ones checked, %d of them crashed twice", c.points, len(c.images), double)
}

func TestCrashCreate(t *testing.T) {
	dir := fastTempDir(t)
	c := newCapture(true)
	c.armed = true
	h, err := heap.Open(filepath.Join(dir, "new.pool"), &heap.Options{Size: crashPoolSize, Device: c.emu})
	c.armed = false
	require.NoError(t, err)
	empty := snapshot(t, h)
	require.NoError(t, h.Close())
	var rejected, opened int
	for i, img := range c.images {
		p := filepath.Join(dir, "image.pool")
		require.NoError(t, os.WriteFile(p, img, 0o600))
		h, err := heap.Open(p, &heap.Options{ForceRelocate: true})
		if err != nil {
			// Before its header is durable the file is not a pool; a crash
			// there leaves a file that is refused, not a broken pool.
			require.True(t, errors.Is(err, pmemgo.ErrNotPool) || errors.Is(err, pmemgo.ErrCorrupt), "image %d: %v", i, err)
			rejected++
			continue
		}
		require.Equal(t, empty, snapshot(t, h), "image %d", i)
		require.NoError(t, h.Close())
		opened++
	}
	require.Positive(t, opened)
	t.Logf("create: %d crash images taken, %d distinct ones checked: %d refused as not a pool, %d open as an empty pool", c.points, len(c.images), rejected, opened)
}
