package crashtest_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

// A small persistent hash map with chaining, the package's second example.

type Entry struct {
	Key, Val uint64
	Next     *Entry
}

type Map struct {
	Buckets []*Entry
	Count   uint64
}

const buckets = 8

func newMap(h *heap.Heap) error {
	return h.Update(func(tx *heap.Tx) error {
		m, err := heap.Root[Map](tx)
		if err != nil {
			return err
		}
		m.Buckets, err = heap.MakeSlice[*Entry](tx, buckets, buckets)
		return err
	})
}

// put inserts or updates key; logBucket false is the bug: the bucket head
// is changed with no undo entry.
func put(h *heap.Heap, key, val uint64, logBucket bool) error {
	return h.Update(func(tx *heap.Tx) error {
		m, err := heap.Root[Map](tx)
		if err != nil {
			return err
		}
		b := &m.Buckets[key%buckets]
		for e := *b; e != nil; e = e.Next {
			if e.Key == key {
				return heap.Set(tx, &e.Val, val)
			}
		}
		e, err := heap.New[Entry](tx)
		if err != nil {
			return err
		}
		e.Key, e.Val, e.Next = key, val, *b
		if logBucket {
			if err := heap.Add(tx, b); err != nil {
				return err
			}
		}
		*b = e
		return heap.Set(tx, &m.Count, m.Count+1)
	})
}

// The operations insert keys 0..5, then overwrite key 2; checkMap accepts
// the state before or after the one in flight.
func mapOps(logBucket bool) []crashtest.Op {
	var ops []crashtest.Op
	for k := range uint64(6) {
		ops = append(ops, crashtest.Op{Name: fmt.Sprintf("put %d", k), Run: func(h *heap.Heap) error { return put(h, k, k*10, logBucket) }})
	}
	return append(ops, crashtest.Op{Name: "update 2", Run: func(h *heap.Heap) error { return put(h, 2, 99, logBucket) }})
}

func mapState(after int) map[uint64]uint64 {
	want := map[uint64]uint64{}
	for k := range uint64(min(after, 6)) {
		want[k] = k * 10
	}
	if after > 6 {
		want[2] = 99
	}
	return want
}

func checkMap(h *heap.Heap, inFlight int) error {
	return h.View(func(tx *heap.Tx) error {
		m, err := heap.Root[Map](tx)
		if err != nil || m == nil || len(m.Buckets) != buckets {
			return fmt.Errorf("no map: %v", err)
		}
		got := map[uint64]uint64{}
		for i, e := range m.Buckets {
			for ; e != nil; e = e.Next {
				if e.Key%buckets != uint64(i) {
					return fmt.Errorf("key %d in bucket %d", e.Key, i)
				}
				got[e.Key] = e.Val
			}
		}
		if uint64(len(got)) != m.Count {
			return fmt.Errorf("count %d, but %d keys", m.Count, len(got))
		}
		before, after := fmt.Sprint(mapState(inFlight)), fmt.Sprint(mapState(inFlight+1))
		if s := fmt.Sprint(got); s != before && s != after {
			return fmt.Errorf("map %s is neither %s nor %s", s, before, after)
		}
		return nil
	})
}

func TestHashMapCorrect(t *testing.T) {
	w := crashtest.Workload{Setup: newMap, Ops: mapOps(true), Check: checkMap}
	sum := crashtest.Run(t, w, &crashtest.Options{Lines: crashtest.LinesUpTo, K: 2})
	assert.Zero(t, len(sum.Failures), "failures are reported above")
}

func TestHashMapBuffered(t *testing.T) {
	w := crashtest.Workload{Setup: newMap, Ops: mapOps(true), Check: checkMap}
	sum := crashtest.Run(t, w, &crashtest.Options{Buffered: true})
	assert.Zero(t, len(sum.Failures), "failures are reported above")
	assert.Positive(t, sum.Images)
}

func TestHashMapBroken(t *testing.T) {
	var found []crashtest.Failure
	w := crashtest.Workload{Setup: newMap, Ops: mapOps(false), Check: checkMap}
	crashtest.Run(t, w, &crashtest.Options{Report: func(f crashtest.Failure) { found = append(found, f) }})
	require.NotEmpty(t, found, "crashtest must find the unlogged bucket head")
	t.Logf("found %d failing states, e.g. %s: %v", len(found), found[0].ID, found[0].Err)
}
