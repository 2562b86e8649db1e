package heap_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// The types of ptrPool hold every kind of pointer word: object pointers,
// unsafe.Pointers, strings and slices, directly, in nested structs and in
// arrays, some of them nil.
type (
	pcLeaf  struct{ A, B uint64 }
	pcInner struct {
		Ptrs [2]*pcLeaf
		Name string
	}
	pcNode struct {
		Key   uint64
		Next  *pcNode
		In    pcInner
		Tags  []uint32
		Leafs []pcLeaf
		Any   unsafe.Pointer
		None  *pcLeaf
		NoTag []byte
	}
	pcRoot struct {
		Head  *pcNode
		Leafs *[3]pcLeaf
		Note  string
	}
)

var (
	pcOffNext  = uint64(unsafe.Offsetof(pcNode{}.Next))
	pcOffPtrs1 = uint64(unsafe.Offsetof(pcNode{}.In) + unsafe.Offsetof(pcInner{}.Ptrs) + 8)
	pcOffName  = uint64(unsafe.Offsetof(pcNode{}.In) + unsafe.Offsetof(pcInner{}.Name))
	pcOffTags  = uint64(unsafe.Offsetof(pcNode{}.Tags))
	pcOffNoTag = uint64(unsafe.Offsetof(pcNode{}.NoTag))
)

const pcNodes = 6

// ptrPool is a closed pool of pcNodes and the pool offsets of what it
// holds.
type ptrPool struct {
	path  string
	img   []byte
	hdr   layout.Header
	nodes []uint64
	// victim is a node freed by a later transaction, big the first byte
	// of a string of several slabs freed by a later transaction.
	victim, big uint64
}

func (p *ptrPool) addr(off uint64) uint64 { return p.hdr.Base + off }

func newPtrPool(t *testing.T) *ptrPool {
	t.Helper()
	p := &ptrPool{path: filepath.Join(t.TempDir(), "ptr.pool")}
	h, err := heap.Open(p.path, &heap.Options{Size: 4 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	offset := func(ptr unsafe.Pointer) uint64 { return uint64(uintptr(ptr) - h.Base()) }
	var victim *pcNode
	var big string
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[pcRoot](tx)
		if err != nil {
			return err
		}
		if root.Leafs, err = heap.New[[3]pcLeaf](tx); err != nil {
			return err
		}
		if root.Note, err = heap.NewString(tx, "every kind of pointer"); err != nil {
			return err
		}
		// Allocated before the nodes, so that the slabs it frees lie
		// below those in use.
		if big, err = heap.NewString(tx, strings.Repeat("b", 40<<10)); err != nil {
			return err
		}
		var leaves [3]*pcLeaf
		for k := range leaves {
			if leaves[k], err = heap.New[pcLeaf](tx); err != nil {
				return err
			}
			leaves[k].A = uint64(k)
		}
		link := &root.Head
		for i := range pcNodes {
			n, err := heap.New[pcNode](tx)
			if err != nil {
				return err
			}
			n.Key = uint64(i)
			n.In.Ptrs[0], n.In.Ptrs[1] = leaves[i%3], leaves[(i+1)%3]
			if n.In.Name, err = heap.NewString(tx, strings.Repeat("n", i+1)); err != nil {
				return err
			}
			if n.Tags, err = heap.MakeSlice[uint32](tx, 3, 3); err != nil {
				return err
			}
			if n.Leafs, err = heap.MakeSlice[pcLeaf](tx, 1, 2); err != nil {
				return err
			}
			n.Leafs[0].A = uint64(i)
			n.Any = unsafe.Pointer(n.In.Ptrs[0])
			*link, link = n, &n.Next
			p.nodes = append(p.nodes, offset(unsafe.Pointer(n)))
		}
		victim, err = heap.New[pcNode](tx)
		return err
	}))
	p.victim, p.big = offset(unsafe.Pointer(victim)), offset(unsafe.Pointer(unsafe.StringData(big)))
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		if err := heap.Free(tx, victim); err != nil {
			return err
		}
		return heap.FreeString(tx, big)
	}))
	require.NoError(t, h.Close())
	checkPool(t, p.path)
	p.img = readFile(t, p.path)
	p.hdr, _ = poolMeta(t, p.img)
	return p
}

// verifyPool reads the pool's list back through its pointers.
func verifyPool(t *testing.T, h *heap.Heap) {
	t.Helper()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[pcRoot](tx)
		require.NoError(t, err)
		assert.Equal(t, "every kind of pointer", root.Note)
		i := 0
		for n := root.Head; n != nil; n = n.Next {
			assert.EqualValues(t, i, n.Key)
			assert.EqualValues(t, (i+1)%3, n.In.Ptrs[1].A)
			assert.Equal(t, strings.Repeat("n", i+1), n.In.Name)
			assert.Len(t, n.Tags, 3)
			assert.Equal(t, 2, cap(n.Leafs))
			assert.EqualValues(t, i, n.Leafs[0].A)
			assert.Equal(t, unsafe.Pointer(n.In.Ptrs[0]), n.Any)
			assert.Nil(t, n.None)
			assert.Nil(t, n.NoTag)
			i++
		}
		assert.Equal(t, pcNodes, i)
		return nil
	}))
}

// openPaths are the opens that must check every pointer: a relocation,
// a reopen at the same base after a crash (the open mark set, as a
// process that did not close leaves it), and an open asking for it.
var openPaths = []struct {
	name  string
	crash bool
	opts  heap.Options
}{
	{"relocated", false, heap.Options{ForceRelocate: true}},
	{"relocated after a crash", true, heap.Options{ForceRelocate: true}},
	{"same base after a crash", true, heap.Options{}},
	{"VerifyPointers", false, heap.Options{VerifyPointers: true}},
}

func crashed(img []byte) []byte {
	layout.SetOpenMark(img[layout.OpenMarkOff:], 1)
	return img
}

func TestOpenChecksPointers(t *testing.T) {
	p := newPtrPool(t)
	node := func(i int, field uint64) uint64 { return p.nodes[i] + field }
	put := func(off, v uint64) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint64(b[off:], v) }
	}
	add := func(off, d uint64) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint64(b[off:], binary.LittleEndian.Uint64(b[off:])+d) }
	}
	neverUsed := p.hdr.SlabOffset(uint32(p.hdr.Slabs-1)) + 4096
	cases := []struct {
		name   string
		damage func([]byte)
		field  string
		says   string
	}{
		{"8 bytes into another object", put(node(1, pcOffNext), p.addr(p.nodes[3]+8)), "field Next", "8 bytes into"},
		{"misaligned", put(node(1, pcOffNext), p.addr(p.nodes[3]+3)), "field Next", "3 bytes into"},
		{"object of another type", put(node(2, pcOffPtrs1), p.addr(p.nodes[4])), "field In.Ptrs[1]", "not a"},
		{"never-used slab", put(node(1, pcOffNext), p.addr(neverUsed)), "field Next", "never used"},
		{"freed slab", put(node(2, pcOffName), p.addr(p.big)), "field In.Name", "free"},
		{"freed slot", put(node(4, pcOffNext), p.addr(p.victim)), "field Next", "free"},
		{"slice length past its capacity", put(node(3, pcOffTags+8), 4), "field Tags", "longer than its capacity"},
		{"slice past its array", put(node(3, pcOffTags+16), 50), "field Tags", "has room for"},
		{"slice data between elements", add(node(3, pcOffTags), 2), "field Tags", "2 bytes into"},
		{"string past its array", put(node(5, pcOffName+8), 5000), "field In.Name", "runs past the end"},
		{"nil slice with a length", put(node(5, pcOffNoTag+8), 3), "field NoTag", "nil slice"},
	}
	for _, tc := range cases {
		for _, op := range openPaths {
			t.Run(tc.name+"/"+op.name, func(t *testing.T) {
				img := append([]byte(nil), p.img...)
				tc.damage(img)
				if op.crash {
					crashed(img)
				}
				opts := op.opts
				err := openImage(t, p.path, img, &opts)
				require.ErrorIs(t, err, pmemgo.ErrCorrupt)
				msg := err.Error()
				assert.Contains(t, msg, "object")
				assert.Contains(t, msg, "heap_test.pcNode) "+tc.field)
				assert.Contains(t, msg, tc.says)
			})
		}
	}
}

func TestOpenGoodPointersEveryPath(t *testing.T) {
	p := newPtrPool(t)
	paths := append(openPaths[:len(openPaths):len(openPaths)], struct {
		name  string
		crash bool
		opts  heap.Options
	}{"clean reopen", false, heap.Options{}})
	for _, op := range paths {
		t.Run(op.name, func(t *testing.T) {
			img := append([]byte(nil), p.img...)
			if op.crash {
				crashed(img)
			}
			require.NoError(t, os.WriteFile(p.path, img, 0o600))
			opts := op.opts
			h, err := heap.Open(p.path, &opts)
			require.NoError(t, err)
			r := h.Recovery()
			verifyPool(t, h)
			require.NoError(t, h.Close())
			checkPool(t, p.path)
			if op.opts.ForceRelocate {
				assert.True(t, r.Relocated)
			}
			if r.Relocated {
				return
			}
			// At the same base, only the clean reopen may use the slab
			// summary, and it walks no pointer.
			assert.Equal(t, op.name == "clean reopen", r.FromSummary, "%+v", r)
			if r.FromSummary {
				assert.Zero(t, r.Validate)
			}
		})
	}
}

// TestOpenResumedSwizzleChecksStampedSlabs forges a swizzle interrupted
// after the slab of the nodes was stamped as rewritten, while its
// pointers are still relative to the old base. An open that resumes the
// swizzle at its target would skip that slab and leave those pointers
// dangling; it must refuse the pool. Landing elsewhere starts a new
// swizzle that rewrites every slab, which is correct.
func TestOpenResumedSwizzleChecksStampedSlabs(t *testing.T) {
	p := newPtrPool(t)
	img := append([]byte(nil), p.img...)
	h := p.hdr
	h.Flags |= layout.FlagSwizzling
	// Below the base: above it may be past the end of the address space.
	h.Old, h.Target = []uint64{h.Base}, h.Base-1<<40
	h.SwizzleGen++
	for i := range 2 {
		h.Encode(img[layout.SlotOff(i):])
	}
	slab, ok := h.SlabIndex(p.nodes[0])
	require.True(t, ok)
	layout.SetSlabGen(img[h.SlabOffset(slab):], h.SwizzleGen)
	require.NoError(t, os.WriteFile(p.path, img, 0o600))
	hp, err := heap.Open(p.path, nil)
	if err == nil {
		r := hp.Recovery()
		verifyPool(t, hp)
		require.NoError(t, hp.Close())
		require.NotEqual(t, h.Target, r.NewBase, "resumed at the target with a stamped slab of old pointers: %+v", r)
		t.Skipf("the target %#x was taken; the open started a new swizzle to %#x", h.Target, r.NewBase)
	}
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), "stamped as rewritten")
	assert.Contains(t, err.Error(), "heap_test.pcNode) field")
	assert.Equal(t, img, readFile(t, p.path), "a refused open must not write the pool")
}
