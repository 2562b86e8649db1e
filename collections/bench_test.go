package collections_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/collections"
	"github.com/pmemgo/pmemgo/heap"
)

type benchRoot struct {
	B *collections.BTreeMap[[16]byte, [100]byte]
	H *collections.HashMap[[16]byte, [100]byte]
}

func benchKey(i int) (k [16]byte) {
	copy(k[:], fmt.Sprintf("%016x", i))
	return k
}

// benchMaps fills both maps with n keys in random order, 1000 a
// transaction.
func benchMaps(b testing.TB, n int) *heap.Heap {
	path := filepath.Join(testDir(b), "bench.pool")
	h, err := heap.Open(path, &heap.Options{Size: 64<<20 + int64(n)*600})
	require.NoError(b, err)
	b.Cleanup(func() { h.Close() })
	perm := rand.New(rand.NewPCG(1, 2)).Perm(n)
	for start := 0; start < n; start += 1000 {
		require.NoError(b, h.Update(func(tx *heap.Tx) error {
			r, err := heap.Root[benchRoot](tx)
			if err != nil {
				return err
			}
			if r.B == nil {
				r.B, _ = collections.NewBTreeMap[[16]byte, [100]byte](tx)
				r.H, _ = collections.NewHashMap[[16]byte, [100]byte](tx)
			}
			for _, i := range perm[start:min(n, start+1000)] {
				v := [100]byte{byte(i)}
				if err := r.B.Put(tx, benchKey(i), v); err != nil {
					return err
				}
				if err := r.H.Put(tx, benchKey(i), v); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	return h
}

// BenchmarkMaps measures, on maps of 100k keys, a durable update of one
// value (an Update each, msync), a lookup in its own View, and a lookup
// inside one long View (the cost of the search alone).
func BenchmarkMaps(b *testing.B) {
	const n = 100_000
	h := benchMaps(b, n)
	var r *benchRoot
	require.NoError(b, h.View(func(tx *heap.Tx) (err error) { r, err = heap.Root[benchRoot](tx); return err }))
	type mapOps struct {
		name string
		get  func(tx *heap.Tx, k [16]byte) ([100]byte, bool)
		put  func(tx *heap.Tx, k [16]byte, v [100]byte) error
	}
	for _, m := range []mapOps{{"btree", r.B.Get, r.B.Put}, {"hash", r.H.Get, r.H.Put}} {
		rng := rand.New(rand.NewPCG(3, 4))
		b.Run(m.name+"/update", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				k := benchKey(rng.IntN(n))
				if err := h.Update(func(tx *heap.Tx) error { return m.put(tx, k, [100]byte{byte(i)}) }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/get-view", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				k := benchKey(rng.IntN(n))
				h.View(func(tx *heap.Tx) error {
					if _, ok := m.get(tx, k); !ok {
						b.Fatal("missing key")
					}
					return nil
				})
			}
		})
		b.Run(m.name+"/get", func(b *testing.B) {
			b.ReportAllocs()
			h.View(func(tx *heap.Tx) error {
				for b.Loop() {
					if _, ok := m.get(tx, benchKey(rng.IntN(n))); !ok {
						b.Fatal("missing key")
					}
				}
				return nil
			})
		})
	}
}

// BenchmarkReopen measures opening a pool that holds both maps, filled
// with 1M keys, and answering a first Get from each; closing it again is
// not timed.
func BenchmarkReopen(b *testing.B) {
	const n = 1_000_000
	h := benchMaps(b, n)
	path := h.Path()
	require.NoError(b, h.Close())
	for _, which := range []string{"btree", "hash"} {
		b.Run(which, func(b *testing.B) {
			k := benchKey(n / 2)
			for b.Loop() {
				h, err := heap.Open(path, nil)
				if err != nil {
					b.Fatal(err)
				}
				err = firstGet(h, which, k)
				b.StopTimer()
				h.Close()
				b.StartTimer()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// firstGet looks k up in the B+tree ("btree") or the hash map of the
// bench pool h, and fails if it is not there.
func firstGet(h *heap.Heap, which string, k [16]byte) error {
	return h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[benchRoot](tx)
		if err != nil {
			return err
		}
		ok := false
		if which == "btree" {
			_, ok = r.B.Get(tx, k)
		} else {
			_, ok = r.H.Get(tx, k)
		}
		if !ok {
			return fmt.Errorf("key %x not found", k)
		}
		return nil
	})
}
