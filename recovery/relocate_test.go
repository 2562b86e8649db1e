package recovery_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// relocateMappers are the two ways a relocated open reads and rewrites
// slot areas: copies through the file, for a device whose mapping is
// shared with it (msync), and the mapping itself (the emulated device,
// whose mapping is private).
var relocateMappers = []struct {
	name string
	new  func() device.Mapper
}{
	{"file copies", func() device.Mapper { return device.Msync{} }},
	{"mapping", func() device.Mapper { return &device.Emulator{} }},
}

// bigKids is the length of the pointer array relocPool adds: 4.8 MB, a
// slot area larger than a relocated open copies, so that it is read and
// rewritten in place whatever the device.
const bigKids = 600_000

// relocPool is the check pool with a large array of pointers to its
// first node; big is the array's offset.
func relocPool(t *testing.T) (p *checkPool, big uint64) {
	p = newCheckPoolSize(t, 16<<20)
	h, err := heap.Open(p.path, nil)
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[checkRoot](tx)
		if err != nil {
			return err
		}
		kids, err := heap.MakeSlice[*checkNode](tx, bigKids, bigKids)
		for i := range kids {
			kids[i] = root.Head
		}
		big = uint64(uintptr(unsafe.Pointer(&kids[0])) - h.Base())
		return err
	}))
	require.NoError(t, h.Close())
	return p, big
}

// openRelocated opens the pool at path away from its base with m.
func openRelocated(t *testing.T, path string, m device.Mapper) (*recovery.Pool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return recovery.Open(f, recovery.Options{Mapper: m, ForceRelocate: true, Workers: 2})
}

// TestRelocatedOpenEveryPath checks that a relocation rewrites the same
// pointers whether slot areas are copied through the file or rewritten in
// the mapping, small slabs and a large array alike, and leaves a pool the
// checker passes.
func TestRelocatedOpenEveryPath(t *testing.T) {
	var rewritten []int64
	for _, mc := range relocateMappers {
		t.Run(mc.name, func(t *testing.T) {
			p, _ := relocPool(t)
			pool, err := openRelocated(t, p.path, mc.new())
			require.NoError(t, err)
			r := pool.Report
			require.NoError(t, pool.Close())
			assert.True(t, r.Relocated)
			assert.Greater(t, r.Swizzle.Pointers, int64(bigKids))
			rewritten = append(rewritten, r.Swizzle.Pointers)
			probs, _, err := runCheck(t, p.path)
			require.NoError(t, err)
			assert.Empty(t, probs)
		})
	}
	require.Len(t, rewritten, 2)
	assert.Equal(t, rewritten[0], rewritten[1])
}

// TestRelocatedOpenRefusesBadPointer damages one pointer, in a small slab
// (copied through the file by the msync device) or in the large array
// (always read in place), and checks that every device refuses the pool
// without writing it.
func TestRelocatedOpenRefusesBadPointer(t *testing.T) {
	for _, mc := range relocateMappers {
		for _, where := range []string{"small slab", "large array"} {
			t.Run(mc.name+"/"+where, func(t *testing.T) {
				p, big := relocPool(t)
				site := p.nodes[2] + checkOffNext
				if where == "large array" {
					site = big + 7*8
				}
				checkEdit(t, p.path, func(b []byte) []byte {
					checkPutWord(b, site, p.addr(p.nodes[3]+8))
					return b
				})
				before, err := os.ReadFile(p.path)
				require.NoError(t, err)
				_, err = openRelocated(t, p.path, mc.new())
				require.ErrorIs(t, err, pmemgo.ErrCorrupt)
				assert.Contains(t, err.Error(), "8 bytes into")
				after, err := os.ReadFile(p.path)
				require.NoError(t, err)
				assert.Equal(t, before, after, "a refused open must not write the pool")
			})
		}
	}
}

// runNodes is how many nodes runsPool links: with their names and tags,
// over a hundred 16 KiB slabs, those with pointers and those without
// interleaved, so that a relocated open copies runs of several slabs with
// pointer-free ones between them, over several fenced batches.
const runNodes = 20_000

// runsPool makes a pool of runNodes nodes in 16 KiB slabs and returns its
// path.
func runsPool(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "runs.pool")
	h, err := heap.Open(path, &heap.Options{Size: 16 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[checkRoot](tx)
		if err != nil {
			return err
		}
		if root.Other, err = heap.New[checkOther](tx); err != nil {
			return err
		}
		link := &root.Head
		for i := range runNodes {
			n, err := heap.New[checkNode](tx)
			if err != nil {
				return err
			}
			n.Key = uint64(i)
			if n.Name, err = heap.NewString(tx, fmt.Sprintf("node %d", i)); err != nil {
				return err
			}
			if n.Tags, err = heap.MakeSlice[uint32](tx, 3, 3); err != nil {
				return err
			}
			n.Tags[0], n.Tags[1], n.Tags[2] = uint32(i), uint32(^i), 7
			n.Any = unsafe.Pointer(root.Other)
			*link, link = n, &n.Next
		}
		return nil
	}))
	require.NoError(t, h.Close())
	return path
}

// checkRunsPool walks the nodes of a runs pool and checks every field.
func checkRunsPool(t *testing.T, path string) {
	h, err := heap.Open(path, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, h.Close()) }()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[checkRoot](tx)
		if err != nil {
			return err
		}
		i := 0
		for n := root.Head; n != nil; n = n.Next {
			require.Equal(t, uint64(i), n.Key)
			require.Equal(t, fmt.Sprintf("node %d", i), n.Name)
			require.Equal(t, []uint32{uint32(i), uint32(^i), 7}, n.Tags)
			require.Equal(t, unsafe.Pointer(root.Other), n.Any)
			i++
		}
		assert.Equal(t, runNodes, i)
		return nil
	}))
}

// TestRelocatedOpenRuns checks that copying slot areas a run of slabs at a
// time rewrites what the mapping path rewrites and leaves the bytes
// between the slot areas of a run, slab headers and pointer-free slabs,
// as they were.
func TestRelocatedOpenRuns(t *testing.T) {
	var rewritten []int64
	for _, mc := range relocateMappers {
		t.Run(mc.name, func(t *testing.T) {
			path := runsPool(t)
			pool, err := openRelocated(t, path, mc.new())
			require.NoError(t, err)
			r := pool.Report
			require.NoError(t, pool.Close())
			require.True(t, r.Relocated)
			assert.Greater(t, r.Swizzle.Slabs, 64, "the swizzle must span several batches")
			rewritten = append(rewritten, r.Swizzle.Pointers)
			probs, _, err := runCheck(t, path)
			require.NoError(t, err)
			assert.Empty(t, probs)
			checkRunsPool(t, path)
		})
	}
	require.Len(t, rewritten, 2)
	assert.Equal(t, rewritten[0], rewritten[1])
}

// plainNode has object pointers only, so that a relocated open checks its
// pointers on the fast path (see plainElement).
type plainNode struct {
	Next  *plainNode
	Other *checkOther
	Key   uint64
}

// TestRelocatedOpenPlainPointers checks that the fast path of the pointer
// rules, taken for types whose pointers are all object pointers, accepts a
// good pool and still refuses, on every path, a pointer into the middle of
// an object, a pointer to a free slot and one of the wrong type.
func TestRelocatedOpenPlainPointers(t *testing.T) {
	const n = 3000
	build := func(t *testing.T) (path string, base uintptr, nodes []uint64, other uint64) {
		path = filepath.Join(t.TempDir(), "plain.pool")
		h, err := heap.Open(path, &heap.Options{Size: 4 << 20})
		require.NoError(t, err)
		base = h.Base()
		var victim *plainNode
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			root, err := heap.Root[checkRoot](tx)
			if err != nil {
				return err
			}
			if root.Other, err = heap.New[checkOther](tx); err != nil {
				return err
			}
			other = uint64(uintptr(unsafe.Pointer(root.Other)) - base)
			var last *plainNode
			for i := range n {
				nd, err := heap.New[plainNode](tx)
				if err != nil {
					return err
				}
				nd.Next, nd.Other, nd.Key = last, root.Other, uint64(i)
				last = nd
				nodes = append(nodes, uint64(uintptr(unsafe.Pointer(nd))-base))
			}
			victim, err = heap.New[plainNode](tx)
			return err
		}))
		nodes = append(nodes, uint64(uintptr(unsafe.Pointer(victim))-base))
		require.NoError(t, h.Update(func(tx *heap.Tx) error { return heap.Free(tx, victim) }))
		require.NoError(t, h.Close())
		return path, base, nodes, other
	}
	offNext := uint64(unsafe.Offsetof(plainNode{}.Next))
	for _, mc := range relocateMappers {
		t.Run(mc.name+"/good", func(t *testing.T) {
			path, _, _, _ := build(t)
			pool, err := openRelocated(t, path, mc.new())
			require.NoError(t, err)
			r := pool.Report
			require.NoError(t, pool.Close())
			assert.GreaterOrEqual(t, r.Swizzle.Pointers, int64(2*n-1))
		})
		for _, bad := range []struct {
			name, want string
			value      func(base uintptr, nodes []uint64, other uint64) uint64
		}{
			{"inside an object", "8 bytes into", func(base uintptr, nodes []uint64, _ uint64) uint64 { return uint64(base) + nodes[5] + 8 }},
			{"free slot", "which is free", func(base uintptr, nodes []uint64, _ uint64) uint64 { return uint64(base) + nodes[n] }},
			{"wrong type", "not a", func(base uintptr, _ []uint64, other uint64) uint64 { return uint64(base) + other }},
		} {
			t.Run(mc.name+"/"+bad.name, func(t *testing.T) {
				path, base, nodes, other := build(t)
				checkEdit(t, path, func(b []byte) []byte {
					checkPutWord(b, nodes[n/2]+offNext, bad.value(base, nodes, other))
					return b
				})
				before, err := os.ReadFile(path)
				require.NoError(t, err)
				_, err = openRelocated(t, path, mc.new())
				require.ErrorIs(t, err, pmemgo.ErrCorrupt)
				assert.Contains(t, err.Error(), bad.want)
				after, err := os.ReadFile(path)
				require.NoError(t, err)
				assert.Equal(t, before, after, "a refused open must not write the pool")
			})
		}
	}
}
