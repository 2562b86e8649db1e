package collections_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/collections"
	"github.com/pmemgo/pmemgo/heap"
)

type hashRoot struct {
	M *collections.HashMap[string, string]
}

func TestHashMapGrowsAndShrinksBack(t *testing.T) {
	p := newPool(t)
	const n = 1000
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[hashRoot](tx)
		if err != nil {
			return err
		}
		r.M, err = collections.NewHashMap[string, string](tx)
		return err
	}))
	// One Update per Put: the table grows four times over, each growth
	// drained by the Puts that follow it.
	for i := range n {
		require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
			r, _ := heap.Root[hashRoot](tx)
			return r.M.Put(tx, fmt.Sprint(i), fmt.Sprint("v", i))
		}))
	}
	p.reopen(t)
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, _ := heap.Root[hashRoot](tx)
		st, err := r.M.Check(tx)
		require.NoError(t, err)
		assert.Equal(t, n, st.Keys)
		v, ok := r.M.Get(tx, "417")
		assert.True(t, ok)
		assert.Equal(t, "v417", v)
		require.NoError(t, r.M.Put(tx, "417", "replaced"))
		for i := range n {
			if i != 417 {
				ok, err := r.M.Delete(tx, fmt.Sprint(i))
				require.NoError(t, err)
				assert.True(t, ok)
			}
		}
		ok, err = r.M.Delete(tx, "no such key")
		require.NoError(t, err)
		assert.False(t, ok)
		return nil
	}))
	require.NoError(t, p.h.View(func(tx *heap.Tx) error {
		r, _ := heap.Root[hashRoot](tx)
		var got []string
		for k, v := range r.M.All(tx) {
			got = append(got, k+"="+v)
		}
		assert.Equal(t, []string{"417=replaced"}, got)
		return nil
	}))
	assert.Equal(t, 1, objects(p.h, "hashEntry"))
	assert.Equal(t, 2, stringArrays(p.h), "the strings of deleted and replaced entries are freed")
}

// A key put and deleted in one transaction: its entry and strings are
// allocated and freed by the same commit.
func TestHashMapPutDeleteInOneUpdate(t *testing.T) {
	p := newPool(t)
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[hashRoot](tx)
		require.NoError(t, err)
		r.M, err = collections.NewHashMap[string, string](tx)
		require.NoError(t, err)
		require.NoError(t, r.M.Put(tx, "a", "b"))
		ok, err := r.M.Delete(tx, "a")
		assert.True(t, ok)
		return err
	}))
	assert.Equal(t, 0, stringArrays(p.h))
}
