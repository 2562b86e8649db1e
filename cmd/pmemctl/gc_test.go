package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

func TestLeaksAndGC(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "leaky.pool", true)
	before, err := os.ReadFile(g.path)
	require.NoError(t, err)

	out, stderr, code := pmemctl(t, "check", "--leaks", g.path)
	require.Equal(t, exitProblems, code)
	assert.Contains(t, out, fmt.Sprintf("object 3 (%s) at offset %d: 48 bytes allocated, but nothing reachable", qualified("goldenNode"), g.leaked))
	assert.Contains(t, out, "array 4 of uint8")
	assert.Contains(t, out, "2 unreachable (64 B)")
	assert.Contains(t, stderr, "2 problems found")

	// Without --leaks, a leak is not a problem.
	_, _, code = pmemctl(t, "check", g.path)
	assert.Equal(t, exitOK, code)

	// The leaked node is in the dump, with its name.
	out, _, code = pmemctl(t, "dump", g.path, "--object", fmt.Sprint(g.leaked+8))
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, `"id":"1:3"`)
	assert.Contains(t, out, `"Key":666,"Name":"leaked"`)

	collected := filepath.Join(dir, "collected.pool")
	out, _, code = pmemctl(t, "gc", g.path, "--output", collected, "--json")
	require.Equal(t, exitOK, code)
	var r gcResult
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	assert.EqualValues(t, 2, r.Freed)
	assert.EqualValues(t, 64, r.FreedBytes)
	assert.EqualValues(t, 12, r.Allocated)
	assert.Empty(t, r.Check.Problems)

	out, _, code = pmemctl(t, "check", "--leaks", collected)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "10 of 10 objects reachable from the root, 0 unreachable")
	out, _, code = pmemctl(t, "dump", collected)
	require.Equal(t, exitOK, code)
	assert.NotContains(t, out, "leaked")
	assert.Contains(t, out, "node-c")

	after, err := os.ReadFile(g.path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "gc changed its input")

	// A second collection has nothing to free.
	out, _, code = pmemctl(t, "gc", collected, "--output", filepath.Join(dir, "again.pool"))
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "freed      0 objects, 0 B")
}

func TestGCRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "bad.pool", false)
	putWord(t, g.path, g.kids1, g.base(t)+g.freed)
	out, stderr, code := pmemctl(t, "gc", g.path, "--output", filepath.Join(dir, "gc.pool"))
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, "field Kids[1] at offset")
	assert.Contains(t, stderr, "1 problem found, so gc would free")
	_, err := os.Stat(filepath.Join(dir, "gc.pool"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestGCEmptiesSlabs collects a pool whose root was never set: every
// object is garbage, and the slabs that held them return to the pool.
func TestGCEmptiesSlabs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rootless.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		for i := range 500 {
			n, err := heap.New[goldenNode](tx)
			if err != nil {
				return err
			}
			n.Key = uint64(i)
		}
		return nil
	}))
	require.NoError(t, h.Close())

	out, _, code := pmemctl(t, "check", "--leaks", path)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, "0 of 500 objects reachable from the root, 500 unreachable")

	collected := filepath.Join(dir, "collected.pool")
	out, _, code = pmemctl(t, "gc", path, "--output", collected)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "freed      500 objects, 23.4 KiB, in one transaction; 2 slabs emptied")
	out, _, code = pmemctl(t, "stats", "--json", collected)
	require.Equal(t, exitOK, code)
	var st statsResult
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	assert.Zero(t, st.SlabsUsed)
}

// TestFreeOffset checks the refusals of heap's untyped free, which gc
// relies on; each transaction is rolled back.
func TestFreeOffset(t *testing.T) {
	g := newGoldenPool(t, t.TempDir(), "golden.pool", false)
	h, err := heap.Open(g.path, nil)
	require.NoError(t, err)
	defer h.Close()
	for _, tc := range []struct {
		name string
		free func(tx *heap.Tx) error
	}{
		{"root", func(tx *heap.Tx) error { return tx.FreeOffset(g.root) }},
		{"inside an object", func(tx *heap.Tx) error { return tx.FreeOffset(g.head + 8) }},
		{"metadata", func(tx *heap.Tx) error { return tx.FreeOffset(4096) }},
		{"past the pool", func(tx *heap.Tx) error { return tx.FreeOffset(1 << 40) }},
		{"free slot", func(tx *heap.Tx) error { return tx.FreeOffset(g.freed) }},
		{"twice", func(tx *heap.Tx) error {
			require.NoError(t, tx.FreeOffset(g.head))
			return tx.FreeOffset(g.head)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorIs(t, h.Update(tc.free), pmemgo.ErrInvalidFree)
		})
	}
	err = h.Update(func(tx *heap.Tx) error {
		require.NoError(t, tx.FreeOffset(g.head))
		_, err := tx.Reach(nil)
		return err
	})
	assert.ErrorContains(t, err, "already allocated or freed")
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		assert.ErrorIs(t, tx.FreeOffset(g.head), pmemgo.ErrReadOnly)
		r, err := tx.Reach(nil)
		require.NoError(t, err)
		assert.EqualValues(t, 10, r.Allocated)
		assert.EqualValues(t, 10, r.Reached)
		return nil
	}))
}

// qualified returns the name the pool stores for a type of this test
// package.
func qualified(name string) string { return "github.com/pmemgo/pmemgo/cmd/pmemctl." + name }
