package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// The golden pool holds a field of every kind dump decodes, pointers of
// every kind the walk follows, and a cycle (Kids[0] of the last node is
// the head).

type goldenRoot struct {
	Head  *goldenNode
	Count int
	Ratio float64
	OK    bool
	Title string
	Tags  []uint32
	Kids  [2]*goldenNode
	Any   unsafe.Pointer
	In    struct {
		X int16
		Y float32
	}
	Mode  goldenMode
	Pairs []goldenPair
}

// goldenMode is a named integer type, which the type table does not
// describe: dump shows it in hex.
type goldenMode uint16

type goldenPair struct {
	A int8
	B uint16
}

type goldenNode struct {
	Key  uint64
	Name string
	Next *goldenNode
	Kids [1]*goldenNode
	Neg  int32
	Flag bool
}

// goldenPool is a closed pool built by newGoldenPool and the pool offsets
// of what it holds.
type goldenPool struct {
	path string
	// root is the root object, head the first of its nodes; kids1 is the
	// pointer word root.Kids[1].
	root, head, kids1 uint64
	// freed is a node freed by the last transaction.
	freed uint64
	// leaked is the node of a leaky pool, which nothing points to.
	leaked uint64
}

// newGoldenPool builds the golden pool at dir/name: a root, a list of
// three nodes with names, tags, kids and an unsafe.Pointer, and a node
// freed by a later transaction. With leak, a last transaction allocates a
// node with a name and links it nowhere.
func newGoldenPool(t *testing.T, dir, name string, leak bool) *goldenPool {
	t.Helper()
	g := &goldenPool{path: filepath.Join(dir, name)}
	h, err := heap.Open(g.path, &heap.Options{Size: 2 << 20, MaxSize: 64 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	offset := func(p unsafe.Pointer) uint64 { return uint64(uintptr(p) - h.Base()) }
	var victim *goldenNode
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[goldenRoot](tx)
		if err != nil {
			return err
		}
		g.root = offset(unsafe.Pointer(root))
		nodes := make([]*goldenNode, 3)
		for i := range nodes {
			if nodes[i], err = heap.New[goldenNode](tx); err != nil {
				return err
			}
			n := nodes[i]
			n.Key, n.Neg, n.Flag = uint64(100+i), int32(-i), i%2 == 0
			if n.Name, err = heap.NewString(tx, "node-"+string(rune('a'+i))); err != nil {
				return err
			}
		}
		for i, n := range nodes {
			if i+1 < len(nodes) {
				n.Next = nodes[i+1]
			}
			n.Kids[0] = nodes[(i+1)%len(nodes)]
		}
		root.Head, root.Count, root.Ratio, root.OK = nodes[0], len(nodes), 0.25, true
		root.Kids = [2]*goldenNode{nodes[0], nodes[1]}
		root.Any = unsafe.Pointer(nodes[2])
		root.In.X, root.In.Y = -3, 1.5
		if root.Title, err = heap.NewString(tx, "golden"); err != nil {
			return err
		}
		if root.Tags, err = heap.MakeSlice[uint32](tx, 3, 4); err != nil {
			return err
		}
		copy(root.Tags, []uint32{7, 8, 9})
		root.Mode = 0x1234
		if root.Pairs, err = heap.MakeSlice[goldenPair](tx, 2, 2); err != nil {
			return err
		}
		root.Pairs[0], root.Pairs[1] = goldenPair{A: -1, B: 2}, goldenPair{A: 3, B: 65535}
		g.head, g.kids1 = offset(unsafe.Pointer(nodes[0])), offset(unsafe.Pointer(&root.Kids[1]))
		victim, err = heap.New[goldenNode](tx)
		g.freed = offset(unsafe.Pointer(victim))
		return err
	}))
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[goldenRoot](tx)
		if err != nil {
			return err
		}
		return errors.Join(heap.Set(tx, &root.Count, root.Count+1), heap.Free(tx, victim))
	}))
	if leak {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			n, err := heap.New[goldenNode](tx)
			if err != nil {
				return err
			}
			n.Key = 666
			g.leaked = offset(unsafe.Pointer(n))
			n.Name, err = heap.NewString(tx, "leaked")
			return err
		}))
	}
	require.NoError(t, h.Close())
	return g
}

// base returns the base address the pool's pointers are relative to.
func (g *goldenPool) base(t *testing.T) uint64 {
	t.Helper()
	info, err := recovery.Inspect(g.path)
	require.NoError(t, err)
	return info.Header.Base
}

// putWord stores v at pool offset off of the file at path.
func putWord(t *testing.T, path string, off, v uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	var b [8]byte
	le.PutUint64(b[:], v)
	_, err = f.WriteAt(b[:], int64(off))
	require.NoError(t, err)
}

// crashImages opens the pool at path on the emulated device and returns
// the distinct images a crash would leave at each fence of op, run as an
// Update, or of the open itself when op is nil (with ForceRelocate, so
// that the open swizzles).
func crashImages(t *testing.T, path string, op func(*heap.Tx) error) [][]byte {
	t.Helper()
	var (
		emu    device.Emulator
		armed  bool
		images [][]byte
		seen   = map[uint64]bool{}
	)
	emu.Hook = func(ev device.Event) {
		if !armed || ev.Kind != device.EventFence {
			return
		}
		img := emu.Device().CrashImage(nil)
		if sum := xxhash.Sum64(img); !seen[sum] {
			seen[sum] = true
			images = append(images, img)
		}
	}
	armed = op == nil
	h, err := heap.Open(path, &heap.Options{Device: &emu, ForceRelocate: op == nil})
	require.NoError(t, err)
	if op != nil {
		armed = true
		require.NoError(t, h.Update(op))
	}
	armed = false
	require.NoError(t, h.Close())
	require.NotEmpty(t, images)
	return images
}
