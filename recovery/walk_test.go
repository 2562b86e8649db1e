package recovery_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// leaks runs CheckLeaks on path and returns the problems and counts.
func leaks(t *testing.T, path string) ([]recovery.Problem, recovery.ReachStats) {
	t.Helper()
	var probs []recovery.Problem
	st, err := recovery.CheckLeaks(path, nil, func(p recovery.Problem) bool {
		assert.Equal(t, "leak", p.Kind)
		assert.ErrorIs(t, p.Err, recovery.ErrUnreachable)
		probs = append(probs, p)
		return true
	})
	require.NoError(t, err)
	return probs, st
}

func TestWalkCleanPool(t *testing.T) {
	p := newCheckPool(t)
	probs, st := leaks(t, p.path)
	assert.Empty(t, probs)
	// The same 27 slots the checker counts; the freed node is not one.
	assert.EqualValues(t, 27, st.Allocated)
	assert.EqualValues(t, 27, st.Reached)
}

// TestWalkFindsLeaks unlinks parts of the check pool's graph and checks
// that exactly what nothing reaches any more is reported.
func TestWalkFindsLeaks(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(root *checkRoot) error
		// want is the number of slots left unreachable.
		want int
	}{
		// Kids still points to the first two nodes; the third to the eighth
		// go, each with its name and tags.
		{"cut the list", func(root *checkRoot) error {
			root.Head.Next.Next = nil
			return nil
		}, 6 * 3},
		// Other stays reachable through every node's Any, an
		// unsafe.Pointer.
		{"drop other", func(root *checkRoot) error {
			root.Other = nil
			return nil
		}, 0},
		// Without Kids, the first node is reached through Head alone.
		{"drop kids array", func(root *checkRoot) error {
			root.Kids = nil
			return nil
		}, 1},
		// An unsafe.Pointer into the middle of an object keeps it, but not
		// the nodes after it once it is cut from them.
		{"interior pointer", func(root *checkRoot) error {
			n := root.Head.Next.Next
			root.Head.Next.Next, n.Next = nil, nil
			root.Head.Next.Any = unsafe.Add(unsafe.Pointer(n), 8)
			return nil
		}, 5 * 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newCheckPool(t)
			h, err := heap.Open(p.path, nil)
			require.NoError(t, err)
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				root, err := heap.Root[checkRoot](tx)
				if err != nil {
					return err
				}
				for n := root.Head; n != nil; n = n.Next {
					if err := heap.Add(tx, n); err != nil {
						return err
					}
				}
				if err := heap.Add(tx, root); err != nil {
					return err
				}
				return tc.cut(root)
			}))
			require.NoError(t, h.Close())
			probs, _, err := runCheck(t, p.path)
			require.NoError(t, err)
			require.Empty(t, probs, "the cut must leave a sound pool")

			leaked, st := leaks(t, p.path)
			assert.Len(t, leaked, tc.want)
			n, _ := st.Unreached()
			assert.EqualValues(t, tc.want, n)
		})
	}
}

// TestWalkNoRoot checks that without a root everything allocated is
// unreachable, and that Unreachable stops when asked.
func TestWalkNoRoot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		for range 130 {
			if _, err := heap.New[checkOther](tx); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, h.Close())
	probs, st := leaks(t, path)
	assert.Len(t, probs, 130)
	assert.EqualValues(t, 130, st.Allocated)
	assert.Zero(t, st.Reached)
	assert.Equal(t, "slab 0 object 129 (github.com/pmemgo/pmemgo/recovery_test.checkOther)", probs[129].Where)

	n := 0
	_, err = recovery.CheckLeaks(path, nil, func(recovery.Problem) bool { n++; return n < 3 })
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}

// TestWalkBadSlab checks that Walk refuses an image whose slab headers do
// not decode rather than walking past them.
func TestWalkBadSlab(t *testing.T) {
	p := newCheckPool(t)
	f, err := os.Open(p.path)
	require.NoError(t, err)
	defer f.Close()
	pool, err := recovery.Open(f, recovery.Options{Mapper: device.Private{}, ReadOnly: true})
	require.NoError(t, err)
	defer pool.Close()
	img := pool.Image()
	img.Mem[p.hdr.SlabOffset(0)+20] ^= 1 // the used count, under the checksum
	_, err = recovery.Walk(img, nil)
	assert.ErrorIs(t, err, pmemgo.ErrCorrupt)
}

func TestInspect(t *testing.T) {
	p := newCheckPool(t)
	info, err := recovery.Inspect(p.path)
	require.NoError(t, err)
	assert.Equal(t, 0, info.Current)
	assert.False(t, info.OpenMark)
	assert.NoError(t, info.Slots[0].Err)
	assert.NoError(t, info.Slots[1].Err)
	assert.NoError(t, info.StateErr)
	assert.NoError(t, info.TypesErr)
	assert.NoError(t, info.Log.Err)
	assert.Zero(t, info.Log.Entries)
	assert.Len(t, info.Types, 6)
	assert.Equal(t, 6, info.Slabs)
	assert.Empty(t, info.SlabErrs)
	assert.EqualValues(t, p.hdr.Size, info.FileSize)

	checkEdit(t, p.path, func(b []byte) []byte {
		b[100] ^= 1                           // header slot A
		b[p.slabOf(p.nodes[0])+20] ^= 1       // a slab's used count
		return b[:len(b)-int(p.hdr.SlabSize)] // the last slab
	})
	info, err = recovery.Inspect(p.path)
	require.NoError(t, err)
	assert.Equal(t, 1, info.Current)
	assert.ErrorIs(t, info.Slots[0].Err, pmemgo.ErrCorrupt)
	assert.Len(t, info.SlabErrs, 1)
	assert.Equal(t, 5, info.Slabs)
	assert.EqualValues(t, p.hdr.Size-p.hdr.SlabSize, info.FileSize)
}

func TestInspectNotAPool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zero")
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o644))
	_, err := recovery.Inspect(path)
	assert.ErrorIs(t, err, pmemgo.ErrNotPool)
	_, err = recovery.OpenReadOnly(path)
	assert.ErrorIs(t, err, pmemgo.ErrNotPool)

	b := make([]byte, layout.HeaderBytes)
	h := layout.Header{Version: layout.Version + 1}
	h.Encode(b)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	_, err = recovery.Inspect(path)
	assert.True(t, errors.Is(err, pmemgo.ErrVersion), "%v", err)
}
