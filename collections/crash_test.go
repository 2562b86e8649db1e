package collections_test

import (
	"flag"
	"fmt"
	"maps"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pmemgo/pmemgo/collections"
	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

var tornFlag = flag.Bool("collections.torn", false, "crash tests: add each single unflushed line, whole and torn (slow)")

// lineOptions are the crash images of the insert and grow tests: what is
// durable at each fence under -short, plus each single unflushed line by
// default, plus torn lines with -collections.torn. CI runs the default
// under the race detector, which makes torn lines too slow for it.
func lineOptions() *crashtest.Options {
	switch {
	case *tornFlag:
		return &crashtest.Options{Lines: crashtest.LinesSingle, Torn: true}
	case testing.Short():
		return &crashtest.Options{}
	}
	return &crashtest.Options{Lines: crashtest.LinesSingle}
}

// crashRoot holds the maps of the crash workloads: string keys, so that
// the allocation and freeing of key copies, separators and values is
// crash-tested too.
type crashRoot struct {
	B *collections.BTreeMap[string, uint64]
	H *collections.HashMap[string, string]
}

// crashOp changes the maps in one Update and the model the same way.
type crashOp struct {
	name  string
	run   func(tx *heap.Tx, r *crashRoot) error
	model func(m map[string]uint64)
}

func key(i int) string { return fmt.Sprintf("%05d", i) }

func putKeys(from, to int, val uint64) crashOp {
	var ks []string
	for i := from; i < to; i++ {
		ks = append(ks, key(i))
	}
	return putAll(fmt.Sprintf("put %s..%s", key(from), key(to-1)), ks, val)
}

// putAll puts keys, in order, with the value val.
func putAll(name string, keys []string, val uint64) crashOp {
	return crashOp{
		name: name,
		run: func(tx *heap.Tx, r *crashRoot) error {
			for _, k := range keys {
				if err := r.B.Put(tx, k, val); err != nil {
					return err
				}
				if err := r.H.Put(tx, k, strconv.FormatUint(val, 10)); err != nil {
					return err
				}
			}
			return nil
		},
		model: func(m map[string]uint64) {
			for _, k := range keys {
				m[k] = val
			}
		},
	}
}

// putKey puts one key that key() does not make, between two it does.
func putKey(k string, val uint64) crashOp {
	return crashOp{
		name: "put " + k,
		run: func(tx *heap.Tx, r *crashRoot) error {
			if err := r.B.Put(tx, k, val); err != nil {
				return err
			}
			return r.H.Put(tx, k, strconv.FormatUint(val, 10))
		},
		model: func(m map[string]uint64) { m[k] = val },
	}
}

func deleteKeys(from, to int) crashOp {
	return crashOp{
		name: fmt.Sprintf("delete %s..%s", key(from), key(to-1)),
		run: func(tx *heap.Tx, r *crashRoot) error {
			for i := from; i < to; i++ {
				if _, err := r.B.Delete(tx, key(i)); err != nil {
					return err
				}
				if _, err := r.H.Delete(tx, key(i)); err != nil {
					return err
				}
			}
			return nil
		},
		model: func(m map[string]uint64) {
			for i := from; i < to; i++ {
				delete(m, key(i))
			}
		},
	}
}

// crashWorkload turns setup and ops into a crashtest workload whose Check
// accepts the model's state before or after the operation in flight, and
// checks both maps' invariants and that the pool holds exactly the nodes,
// entries and strings they reach.
func crashWorkload(setup []crashOp, ops []crashOp) crashtest.Workload {
	model := map[string]uint64{}
	for _, op := range setup {
		op.model(model)
	}
	states := []map[string]uint64{maps.Clone(model)}
	w := crashtest.Workload{
		Size: 4 << 20,
		Setup: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				r, err := heap.Root[crashRoot](tx)
				if err != nil {
					return err
				}
				if r.B, err = collections.NewBTreeMap[string, uint64](tx); err != nil {
					return err
				}
				if r.H, err = collections.NewHashMap[string, string](tx); err != nil {
					return err
				}
				for _, op := range setup {
					if err := op.run(tx, r); err != nil {
						return err
					}
				}
				return nil
			})
		},
		Check: func(h *heap.Heap, inFlight int) error {
			return checkCrashed(h, states[inFlight], states[inFlight+1])
		},
	}
	for _, op := range ops {
		op.model(model)
		states = append(states, maps.Clone(model))
		w.Ops = append(w.Ops, crashtest.Op{Name: op.name, Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				r, err := heap.Root[crashRoot](tx)
				if err != nil {
					return err
				}
				return op.run(tx, r)
			})
		}})
	}
	return w
}

func checkCrashed(h *heap.Heap, before, after map[string]uint64) error {
	var bst, hst collections.MapStats
	err := h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[crashRoot](tx)
		if err != nil {
			return err
		}
		if bst, err = r.B.Check(tx); err != nil {
			return err
		}
		if hst, err = r.H.Check(tx); err != nil {
			return err
		}
		got := map[string]uint64{}
		for k, v := range r.B.All(tx) {
			got[k] = v
		}
		if !maps.Equal(got, before) && !maps.Equal(got, after) {
			return fmt.Errorf("btree holds %d keys, neither the %d before nor the %d after", len(got), len(before), len(after))
		}
		for k, v := range r.H.All(tx) {
			if n, err := strconv.ParseUint(v, 10, 64); err != nil || got[k] != n {
				return fmt.Errorf("hash map: key %s value %q, btree %d", k, v, got[k])
			}
		}
		if hst.Keys != bst.Keys {
			return fmt.Errorf("hash map holds %d keys, btree %d", hst.Keys, bst.Keys)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n := objects(h, "leafNode", "innerNode"); n != bst.Nodes {
		return fmt.Errorf("pool holds %d B+tree nodes, the tree reaches %d", n, bst.Nodes)
	}
	if n := objects(h, "hashEntry"); n != hst.Nodes {
		return fmt.Errorf("pool holds %d hash entries, the map reaches %d", n, hst.Nodes)
	}
	// Strings: each B+tree key, one separator per leaf but the first, and
	// each hash key and value.
	if want, n := bst.Keys+max(bst.Leaves-1, 0)+2*hst.Keys, stringArrays(h); n != want {
		return fmt.Errorf("pool holds %d strings, the maps reach %d", n, want)
	}
	return nil
}

// TestCrashInsert crashes at every fence of inserts that split a leaf and
// the root (528 sequential keys fill 33 leaves, the most one inner node
// holds), that split a full leaf in its middle, that grow the hash table
// and drain it, and of an update.
func TestCrashInsert(t *testing.T) {
	setup := []crashOp{putKeys(0, 528, 1)}
	ops := []crashOp{
		putKeys(1000, 1001, 2),
		putKeys(1001, 1002, 2),
		putKeys(5, 6, 3),
	}
	for i := 2000; i < 2004; i++ {
		ops = append(ops, putKeys(i, i+1, 4))
	}
	sum := crashtest.Run(t, crashWorkload(setup, ops), lineOptions())
	assert.Empty(t, sum.Failures, "failures are reported above")
}

// TestCrashShift crashes at every fence of inserts into a full leaf whose
// left or right sibling has room, which move entries to the sibling
// instead of splitting: the new key staying in its leaf, then moving with
// the others, each way.
func TestCrashShift(t *testing.T) {
	setup := []crashOp{putKeys(0, 528, 1), deleteKeys(2, 10), deleteKeys(64, 72)}
	ops := []crashOp{
		putKey("00020a", 5), putKey("00016a", 6), // to the left: leaf 0 has room
		putKey("00050a", 7), putKey("00063a", 8), // to the right: leaf 2 is full, leaf 4 has room
	}
	sum := crashtest.Run(t, crashWorkload(setup, ops), lineOptions())
	assert.Empty(t, sum.Failures, "failures are reported above")
}

// TestCrashDelete crashes at every fence of deletes that merge leaves,
// then inner nodes, then collapse the root, down to one leaf and an empty
// map.
func TestCrashDelete(t *testing.T) {
	setup := []crashOp{putKeys(0, 560, 1), deleteKeys(250, 540)}
	ops := []crashOp{
		deleteKeys(0, 170),
		deleteKeys(170, 250),
		deleteKeys(540, 560),
	}
	if testing.Short() {
		ops = ops[:1]
	}
	sum := crashtest.Run(t, crashWorkload(setup, ops), &crashtest.Options{})
	assert.Empty(t, sum.Failures, "failures are reported above")
}

// putAfter puts n keys that sort between key(i) and key(i+1), in order.
func putAfter(i, n int, val uint64) crashOp {
	ks := make([]string, n)
	for j := range ks {
		ks[j] = key(i) + fmt.Sprintf("%03d", j)
	}
	return putAll(fmt.Sprintf("put %s..%s", ks[0], ks[n-1]), ks, val)
}

// TestCrashBorrow crashes at every fence of deletes whose leaf merge
// leaves an inner node with no key next to a full sibling, which then
// gives it a child (innerNode.borrow): from the right, and from the left
// when the keyless node is the last child. 800 sequential keys make a
// root over inner nodes of 16 and 32 keys; 256 more after key 271 fill
// the first as well.
func TestCrashBorrow(t *testing.T) {
	t.Run("from the right", func(t *testing.T) {
		// The first inner node is left with two leaves; emptying the
		// first merges them.
		setup := []crashOp{putKeys(0, 800, 1), deleteKeys(0, 240)}
		ops := []crashOp{deleteKeys(240, 255), deleteKeys(255, 256)}
		sum := crashtest.Run(t, crashWorkload(setup, ops), lineOptions())
		assert.Empty(t, sum.Failures, "failures are reported above")
	})
	t.Run("from the left", func(t *testing.T) {
		setup := []crashOp{putKeys(0, 800, 1), putAfter(271, 256, 1), deleteKeys(272, 768)}
		ops := []crashOp{deleteKeys(768, 783), deleteKeys(783, 784)}
		sum := crashtest.Run(t, crashWorkload(setup, ops), lineOptions())
		assert.Empty(t, sum.Failures, "failures are reported above")
	})
}

// TestCrashHashGrow crashes at every fence of the Put that starts growing
// the hash table, of each Put and Delete that drains two of its buckets,
// and of the one that drains the last and frees the old table.
func TestCrashHashGrow(t *testing.T) {
	setup := []crashOp{putKeys(0, 16, 1)}
	ops := []crashOp{putKeys(16, 17, 2)}
	for i := 17; i < 24; i++ {
		ops = append(ops, putKeys(i, i+1, 2))
	}
	ops = append(ops, deleteKeys(3, 4), putKeys(24, 26, 3))
	sum := crashtest.Run(t, crashWorkload(setup, ops), lineOptions())
	assert.Empty(t, sum.Failures, "failures are reported above")
}
