package collections_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/collections"
	"github.com/pmemgo/pmemgo/heap"
)

type intRoot struct {
	M *collections.BTreeMap[int64, uint64]
}

type strRoot struct {
	M *collections.BTreeMap[string, string]
}

type arrRoot struct {
	M *collections.BTreeMap[[16]byte, [100]byte]
}

func TestBTreeMapIntKeys(t *testing.T) {
	p := newPool(t)
	const n = 2000
	keys := make([]int64, n)
	for i := range keys {
		keys[i] = int64((i*7919)%n) - n/2 // every key once, out of order, negatives included
	}
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[intRoot](tx)
		if err != nil {
			return err
		}
		if r.M, err = collections.NewBTreeMap[int64, uint64](tx); err != nil {
			return err
		}
		for _, k := range keys {
			if err := r.M.Put(tx, k, uint64(k*k)); err != nil {
				return err
			}
		}
		return nil
	}))
	p.reopen(t)
	require.NoError(t, p.h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[intRoot](tx)
		require.NoError(t, err)
		st, err := r.M.Check(tx)
		require.NoError(t, err)
		assert.Equal(t, n, st.Keys)
		assert.Equal(t, 2, st.Height, "2000 keys need two inner levels")
		assert.Equal(t, n, r.M.Len(tx))
		v, ok := r.M.Get(tx, 7)
		assert.True(t, ok)
		assert.Equal(t, uint64(49), v)
		_, ok = r.M.Get(tx, n)
		assert.False(t, ok)

		var got []int64
		for k := range r.M.All(tx) {
			got = append(got, k)
		}
		want := slices.Sorted(slices.Values(keys))
		assert.Equal(t, want, got)
		got = got[:0]
		for k := range r.M.Backward(tx) {
			got = append(got, k)
		}
		slices.Reverse(want)
		assert.Equal(t, want, got)

		k, _, ok := r.M.Min(tx)
		assert.True(t, ok)
		assert.Equal(t, int64(-n/2), k)
		k, _, ok = r.M.Max(tx)
		assert.True(t, ok)
		assert.Equal(t, int64(n/2-1), k)
		return nil
	}))
}

func TestBTreeMapSeek(t *testing.T) {
	p := newPool(t)
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[intRoot](tx)
		require.NoError(t, err)
		r.M, err = collections.NewBTreeMap[int64, uint64](tx)
		require.NoError(t, err)
		for k := int64(0); k < 1000; k += 2 {
			require.NoError(t, r.M.Put(tx, k, 0))
		}
		first := func(seq func(func(int64, uint64) bool), n int) []int64 {
			var out []int64
			for k := range seq {
				if len(out) == n {
					break
				}
				out = append(out, k)
			}
			return out
		}
		tests := []struct {
			name string
			seq  func(func(int64, uint64) bool)
			want []int64
		}{
			{"seek to a key", r.M.Seek(tx, 500), []int64{500, 502, 504}},
			{"seek between keys", r.M.Seek(tx, 501), []int64{502, 504, 506}},
			{"seek before all", r.M.Seek(tx, -5), []int64{0, 2, 4}},
			{"seek past all", r.M.Seek(tx, 999), nil},
			{"backward from a key", r.M.SeekBackward(tx, 500), []int64{500, 498, 496}},
			{"backward between keys", r.M.SeekBackward(tx, 501), []int64{500, 498, 496}},
			{"backward before all", r.M.SeekBackward(tx, -1), nil},
			{"backward past all", r.M.SeekBackward(tx, 5000), []int64{998, 996, 994}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				assert.Equal(t, tc.want, first(tc.seq, 3))
			})
		}
		return nil
	}))
}

func TestBTreeMapStringsFreed(t *testing.T) {
	p := newPool(t)
	const n = 600
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[strRoot](tx)
		if err != nil {
			return err
		}
		r.M, err = collections.NewBTreeMap[string, string](tx)
		return err
	}))
	for round := range 2 {
		require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
			r, _ := heap.Root[strRoot](tx)
			for i := range n {
				if err := r.M.Put(tx, fmt.Sprintf("key-%05d", i), fmt.Sprintf("value %d of round %d", i, round)); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(t, p.h.View(func(tx *heap.Tx) error {
		r, _ := heap.Root[strRoot](tx)
		v, ok := r.M.Get(tx, "key-00042")
		assert.True(t, ok)
		assert.Equal(t, "value 42 of round 1", v)
		return nil
	}))
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, _ := heap.Root[strRoot](tx)
		for i := range n {
			ok, err := r.M.Delete(tx, fmt.Sprintf("key-%05d", i))
			if err != nil {
				return err
			}
			assert.True(t, ok)
		}
		st, err := r.M.Check(tx)
		assert.NoError(t, err)
		assert.Equal(t, 0, st.Keys)
		return nil
	}))
	// Only the root leaf is left: every key and value string, separator
	// copy and merged node was freed.
	assert.Equal(t, 0, stringArrays(p.h), "strings left allocated")
	assert.Equal(t, 1, objects(p.h, "leafNode", "innerNode"), "nodes left allocated")
}

func TestBTreeMapByteArrayKeys(t *testing.T) {
	p := newPool(t)
	key := func(i int) (k [16]byte) {
		copy(k[:], fmt.Sprintf("%016x", i*2654435761%1000))
		return k
	}
	require.NoError(t, p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[arrRoot](tx)
		require.NoError(t, err)
		r.M, err = collections.NewBTreeMap[[16]byte, [100]byte](tx)
		require.NoError(t, err)
		for i := range 300 {
			var v [100]byte
			v[0] = byte(i)
			require.NoError(t, r.M.Put(tx, key(i), v))
		}
		v, ok := r.M.Get(tx, key(17))
		assert.True(t, ok)
		assert.Equal(t, byte(17), v[0])
		_, err = r.M.Check(tx)
		return err
	}))
}

func TestNewBTreeMapRefusesKeyType(t *testing.T) {
	p := newPool(t)
	err := p.h.Update(func(tx *heap.Tx) error {
		_, err := collections.NewBTreeMap[float64, int](tx)
		return err
	})
	require.Error(t, err)
	assert.True(t, errors.Is(err, pmemgo.ErrUnsupportedType))
	assert.Contains(t, err.Error(), "float64")
}

func TestBTreeMapForeignPointerValueFailsCommit(t *testing.T) {
	p := newPool(t)
	err := p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[struct {
			M *collections.BTreeMap[int, *int]
		}](tx)
		require.NoError(t, err)
		r.M, err = collections.NewBTreeMap[int, *int](tx)
		require.NoError(t, err)
		return r.M.Put(tx, 1, new(int))
	})
	assert.ErrorIs(t, err, pmemgo.ErrForeignPointer)
}
