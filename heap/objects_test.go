package heap_test

import (
	"fmt"
	"iter"
	"log"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// keysOf collects the keys of the nodes Objects yields.
func keysOf(t *testing.T, seq iter.Seq2[*Node, error]) []uint64 {
	t.Helper()
	var keys []uint64
	for n, err := range seq {
		// assert, not require: Views call this from several goroutines.
		if !assert.NoError(t, err) {
			break
		}
		keys = append(keys, n.Key)
	}
	slices.Sort(keys)
	return keys
}

// lostNodes makes 300 nodes (several slabs of them), frees 50 and drops
// the pointers to 100 more without freeing them: the 250 live keys are
// returned.
func lostNodes(t *testing.T, h *heap.Heap) []uint64 {
	t.Helper()
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 300) }))
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		for range 50 {
			if err := removeHead(tx); err != nil {
				return err
			}
		}
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		n := root.Head
		for range 100 {
			n = n.Next
		}
		// The list now skips 100 nodes, which stay allocated.
		return heap.Set(tx, &root.Head, n)
	}))
	var want []uint64
	for k := range uint64(250) {
		want = append(want, k)
	}
	return want
}

func TestObjects(t *testing.T) {
	h, path := openTemp(t, &heap.Options{Size: 4 << 20, SlabSize: 16 << 10})
	want := lostNodes(t, h)
	_, st := poolMeta(t, readFile(t, path))
	types := st.Types
	require.Greater(t, nodeSlabs(h), 1, "the nodes fill several slabs")

	require.NoError(t, h.View(func(tx *heap.Tx) error {
		assert.Equal(t, want, keysOf(t, heap.Objects[Node](tx)), "every live node, reachable or not")
		roots := 0
		for r, err := range heap.Objects[Root](tx) {
			require.NoError(t, err)
			assert.Equal(t, 250, r.Count, "the root")
			roots++
		}
		assert.Equal(t, 1, roots)
		for range heap.Objects[uint32](tx) {
			t.Error("array elements are not objects")
		}
		for range heap.Objects[neverStored](tx) {
			t.Error("a type the pool never stored has no objects")
		}
		return nil
	}))

	// In an Update: the transaction's own allocations are seen, its
	// frees are not, and nothing is stored by looking.
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		if err := addNodes(tx, 1000, 3); err != nil {
			return err
		}
		if err := removeHead(tx); err != nil { // node 1002
			return err
		}
		got := keysOf(t, heap.Objects[Node](tx))
		assert.Equal(t, append(slices.Clone(want), 1000, 1001), got)
		for range heap.Objects[neverStored](tx) {
			t.Error("neverStored has no objects")
		}
		// Breaking out of the loop ends the iteration.
		n := 0
		for range heap.Objects[Node](tx) {
			if n++; n == 10 {
				break
			}
		}
		assert.Equal(t, 10, n)
		return nil
	}))
	_, st = poolMeta(t, readFile(t, path))
	assert.Equal(t, types, st.Types, "iterating over a type stores no type")

	// Used after its transaction, the iterator yields ErrTxClosed.
	var late iter.Seq2[*Node, error]
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		late = heap.Objects[Node](tx)
		return nil
	}))
	for n, err := range late {
		assert.Nil(t, n)
		require.ErrorIs(t, err, pmemgo.ErrTxClosed)
	}
}

// neverStored is a type no test stores in a pool.
type neverStored struct{ A uint64 }

// nodeSlabs returns how many slabs hold nodes.
func nodeSlabs(h *heap.Heap) int {
	for _, ts := range h.Stats().Types {
		if ts.Name == "github.com/pmemgo/pmemgo/heap_test.Node" {
			return ts.Slabs
		}
	}
	return 0
}

// TestObjectsTypeMismatch stores another layout under Node's name: the
// iteration yields ErrTypeMismatch instead of reading objects as Nodes.
func TestObjectsTypeMismatch(t *testing.T) {
	h, path := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	require.NoError(t, h.Close())
	editStoredType(t, path, "github.com/pmemgo/pmemgo/heap_test.Node", func(d *layout.TypeDesc) { d.Fields[0].Type = "int64" })
	h, err := heap.Open(path, nil)
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		n := 0
		for p, err := range heap.Objects[Node](tx) {
			assert.Nil(t, p)
			assert.ErrorIs(t, err, pmemgo.ErrTypeMismatch)
			n++
		}
		assert.Equal(t, 1, n, "one error ends the iteration")
		return nil
	}))
}

// This example finds objects no pointer leads to any more: a program that
// lost its root pointer gets its data back this way.
func ExampleObjects() {
	type Note struct {
		ID   int
		Text string
	}
	dir, err := os.MkdirTemp("", "pmemgo-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	h, err := heap.Open(filepath.Join(dir, "notes.pool"), &heap.Options{Size: 4 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()
	err = h.Update(func(tx *heap.Tx) error {
		for i, text := range []string{"milk", "eggs", "bread"} {
			n, err := heap.New[Note](tx)
			if err != nil {
				return err
			}
			n.ID = i
			if n.Text, err = heap.NewString(tx, text); err != nil {
				return err
			}
			// No pointer to n is stored anywhere.
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	err = h.View(func(tx *heap.Tx) error {
		var notes []string
		for n, err := range heap.Objects[Note](tx) {
			if err != nil {
				return err
			}
			notes = append(notes, fmt.Sprintf("%d:%s", n.ID, n.Text))
		}
		slices.Sort(notes)
		fmt.Println(notes)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: [0:milk 1:eggs 2:bread]
}
