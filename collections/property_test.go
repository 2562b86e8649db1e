package collections_test

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/pmemgo/pmemgo/collections"
	"github.com/pmemgo/pmemgo/heap"
)

// propRoot holds one map of each kind; the property test applies every
// operation to all four and compares them with one Go map.
type propRoot struct {
	B  *collections.BTreeMap[uint16, uint64]
	H  *collections.HashMap[uint16, uint64]
	BS *collections.BTreeMap[string, string]
	HS *collections.HashMap[string, string]
}

type anyMap[K comparable, V any] interface {
	Get(*heap.Tx, K) (V, bool)
	Put(*heap.Tx, K, V) error
	Delete(*heap.Tx, K) (bool, error)
	Len(*heap.Tx) int
	All(*heap.Tx) iter.Seq2[K, V]
	Check(*heap.Tx) (collections.MapStats, error)
}

const maxKey = 1500

var errAbort = errors.New("abort on purpose")

type propState struct {
	p     *pool
	model map[uint16]uint64
}

// apply runs fn on the four maps in one Update. The model follows unless
// the transaction is aborted.
func (s *propState) apply(t *rapid.T, abort bool, fn func(tx *heap.Tx, r *propRoot, model map[uint16]uint64) error) {
	next := maps.Clone(s.model)
	err := s.p.h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[propRoot](tx)
		if err != nil {
			return err
		}
		if err := fn(tx, r, next); err != nil {
			return err
		}
		if abort {
			return errAbort
		}
		return nil
	})
	if abort {
		if !errors.Is(err, errAbort) {
			t.Fatalf("aborted update: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	s.model = next
}

func put(tx *heap.Tx, r *propRoot, model map[uint16]uint64, k uint16, v uint64) error {
	model[k] = v
	ks, vs := strconv.Itoa(int(k)), strconv.FormatUint(v, 10)
	return errors.Join(r.B.Put(tx, k, v), r.H.Put(tx, k, v), r.BS.Put(tx, ks, vs), r.HS.Put(tx, ks, vs))
}

func del(tx *heap.Tx, r *propRoot, model map[uint16]uint64, k uint16) error {
	_, want := model[k]
	delete(model, k)
	ks := strconv.Itoa(int(k))
	for i, f := range []func() (bool, error){
		func() (bool, error) { return r.B.Delete(tx, k) },
		func() (bool, error) { return r.H.Delete(tx, k) },
		func() (bool, error) { return r.BS.Delete(tx, ks) },
		func() (bool, error) { return r.HS.Delete(tx, ks) },
	} {
		got, err := f()
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("map %d: delete %d reported %v, model %v", i, k, got, want)
		}
	}
	return nil
}

func keyOf(t *rapid.T, s *propState) uint16 {
	if len(s.model) > 0 && rapid.Bool().Draw(t, "existing") {
		keys := slices.Sorted(maps.Keys(s.model))
		return keys[rapid.IntRange(0, len(keys)-1).Draw(t, "index")]
	}
	return uint16(rapid.IntRange(0, maxKey).Draw(t, "key"))
}

// TestMapsAgainstModel applies random puts, deletes, bulk loads and
// deletes, aborted transactions and reopens at a new base to both maps,
// with integer and string keys, and after every step compares each map
// with a Go map, checks its invariants and counts its nodes against what
// the pool holds, so that a leaked node fails.
func TestMapsAgainstModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := &propState{p: newPool(t), model: map[uint16]uint64{}}
		require.NoError(t, s.p.h.Update(func(tx *heap.Tx) error {
			r, err := heap.Root[propRoot](tx)
			if err != nil {
				return err
			}
			r.B, _ = collections.NewBTreeMap[uint16, uint64](tx)
			r.H, _ = collections.NewHashMap[uint16, uint64](tx)
			r.BS, _ = collections.NewBTreeMap[string, string](tx)
			r.HS, err = collections.NewHashMap[string, string](tx)
			return err
		}))
		t.Repeat(map[string]func(*rapid.T){
			"put": func(t *rapid.T) {
				k, v := keyOf(t, s), rapid.Uint64().Draw(t, "value")
				s.apply(t, false, func(tx *heap.Tx, r *propRoot, m map[uint16]uint64) error { return put(tx, r, m, k, v) })
			},
			"delete": func(t *rapid.T) {
				k := keyOf(t, s)
				s.apply(t, false, func(tx *heap.Tx, r *propRoot, m map[uint16]uint64) error { return del(tx, r, m, k) })
			},
			"bulk put": func(t *rapid.T) {
				from, n, step := keyOf(t, s), rapid.IntRange(1, 300).Draw(t, "n"), rapid.IntRange(1, 3).Draw(t, "step")
				abort := rapid.IntRange(0, 5).Draw(t, "abort") == 0
				s.apply(t, abort, func(tx *heap.Tx, r *propRoot, m map[uint16]uint64) error {
					for i := range n {
						if err := put(tx, r, m, uint16((int(from)+i*step)%(maxKey+1)), uint64(i)); err != nil {
							return err
						}
					}
					return nil
				})
			},
			"bulk delete": func(t *rapid.T) {
				from, n := keyOf(t, s), rapid.IntRange(1, 400).Draw(t, "n")
				abort := rapid.IntRange(0, 5).Draw(t, "abort") == 0
				s.apply(t, abort, func(tx *heap.Tx, r *propRoot, m map[uint16]uint64) error {
					for i := range n {
						if err := del(tx, r, m, uint16((int(from)+i)%(maxKey+1))); err != nil {
							return err
						}
					}
					return nil
				})
			},
			"churn": func(t *rapid.T) {
				// Puts and deletes of the same keys in one transaction:
				// nodes and strings allocated and freed by one commit.
				ks := rapid.SliceOfN(rapid.IntRange(0, maxKey), 1, 200).Draw(t, "keys")
				s.apply(t, false, func(tx *heap.Tx, r *propRoot, m map[uint16]uint64) error {
					for i, k := range ks {
						if err := put(tx, r, m, uint16(k), uint64(i)); err != nil {
							return err
						}
						if i%3 != 0 {
							if err := del(tx, r, m, uint16(ks[i/2])); err != nil {
								return err
							}
						}
					}
					return nil
				})
			},
			"reopen": func(t *rapid.T) { s.p.reopen(t) },
			"":       func(t *rapid.T) { s.check(t) },
		})
	})
}

// check compares every map with the model.
func (s *propState) check(t *rapid.T) {
	var nodes, entries int
	err := s.p.h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[propRoot](tx)
		if err != nil {
			return err
		}
		strModel := map[string]string{}
		for k, v := range s.model {
			strModel[strconv.Itoa(int(k))] = strconv.FormatUint(v, 10)
		}
		for _, c := range []struct {
			name    string
			st      func(*heap.Tx) (collections.MapStats, error)
			compare func() error
			btree   bool
		}{
			{"btree", r.B.Check, func() error { return sameAsModel(tx, r.B, s.model, cmp.Less[uint16]) }, true},
			{"hash", r.H.Check, func() error { return sameAsModel(tx, r.H, s.model, nil) }, false},
			{"btree strings", r.BS.Check, func() error { return sameAsModel(tx, r.BS, strModel, cmp.Less[string]) }, true},
			{"hash strings", r.HS.Check, func() error { return sameAsModel(tx, r.HS, strModel, nil) }, false},
		} {
			st, err := c.st(tx)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if err := c.compare(); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if c.btree {
				nodes += st.Nodes
			} else {
				entries += st.Nodes
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := objects(s.p.h, "leafNode", "innerNode"); got != nodes {
		t.Fatalf("pool holds %d B+tree nodes, the trees reach %d", got, nodes)
	}
	if got := objects(s.p.h, "hashEntry"); got != entries {
		t.Fatalf("pool holds %d hash entries, the maps reach %d", got, entries)
	}
}

// sameAsModel compares m with model; less, when set, is the order All
// must follow.
func sameAsModel[K, V comparable](tx *heap.Tx, m anyMap[K, V], model map[K]V, less func(a, b K) bool) error {
	if m.Len(tx) != len(model) {
		return fmt.Errorf("length %d, model %d", m.Len(tx), len(model))
	}
	var prev *K
	n := 0
	for k, v := range m.All(tx) {
		if want, ok := model[k]; !ok || want != v {
			return fmt.Errorf("key %v: value %v, model %v (present %v)", k, v, want, ok)
		}
		if got, ok := m.Get(tx, k); !ok || got != v {
			return fmt.Errorf("key %v: Get %v, %v, All %v", k, got, ok, v)
		}
		if less != nil && prev != nil && !less(*prev, k) {
			return fmt.Errorf("key %v after %v", k, *prev)
		}
		prev = &k
		n++
	}
	if n != len(model) {
		return fmt.Errorf("iterated %d keys, model %d", n, len(model))
	}
	return nil
}
