package crashtest_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

// A persistent linked list, the first of the package's two examples.

type ListNode struct {
	Val  uint64
	Next *ListNode
}

type List struct {
	Head *ListNode
	Len  uint64
}

// push is correct: the new node needs no logging, the list header is
// logged before it changes.
func push(h *heap.Heap, v uint64) error {
	return h.Update(func(tx *heap.Tx) error {
		l, err := heap.Root[List](tx)
		if err != nil {
			return err
		}
		n, err := heap.New[ListNode](tx)
		if err != nil {
			return err
		}
		n.Val, n.Next = v, l.Head
		if err := heap.Add(tx, l); err != nil {
			return err
		}
		l.Head = n
		l.Len++
		return nil
	})
}

// pushUnlogged forgets to log the length: it is changed in place with no
// undo entry, so a crash can leave a length that disagrees with the list.
func pushUnlogged(h *heap.Heap, v uint64) error {
	return h.Update(func(tx *heap.Tx) error {
		l, err := heap.Root[List](tx)
		if err != nil {
			return err
		}
		n, err := heap.New[ListNode](tx)
		if err != nil {
			return err
		}
		n.Val, n.Next = v, l.Head
		if err := heap.Add(tx, &l.Head); err != nil {
			return err
		}
		l.Head = n
		l.Len++ // BUG: not logged
		return nil
	})
}

// checkList accepts the list with inFlight or inFlight+1 elements, pushed
// in order, whose length matches.
func checkList(h *heap.Heap, inFlight int) error {
	return h.View(func(tx *heap.Tx) error {
		l, err := heap.Root[List](tx)
		if err != nil || l == nil {
			return fmt.Errorf("no list: %v", err)
		}
		var vals []uint64
		for n := l.Head; n != nil; n = n.Next {
			vals = append(vals, n.Val)
		}
		if uint64(len(vals)) != l.Len {
			return fmt.Errorf("length %d, but %d nodes", l.Len, len(vals))
		}
		if len(vals) != inFlight+1 && len(vals) != inFlight+2 {
			return fmt.Errorf("%d nodes during push %d", len(vals), inFlight)
		}
		for i, v := range vals {
			if v != uint64(len(vals)-1-i) {
				return fmt.Errorf("node %d holds %d", i, v)
			}
		}
		return nil
	})
}

func listWorkload(pushFn func(*heap.Heap, uint64) error) crashtest.Workload {
	w := crashtest.Workload{
		Setup: func(h *heap.Heap) error { return push(h, 0) },
		Check: checkList,
	}
	for i := 1; i <= 3; i++ {
		w.Ops = append(w.Ops, crashtest.Op{Name: fmt.Sprintf("push %d", i), Run: func(h *heap.Heap) error { return pushFn(h, uint64(i)) }})
	}
	return w
}

func TestListCorrect(t *testing.T) {
	sum := crashtest.Run(t, listWorkload(push), &crashtest.Options{Lines: crashtest.LinesSingle, Torn: true})
	assert.Zero(t, len(sum.Failures), "failures are reported above")
	assert.Positive(t, sum.Images)
	for _, l := range sum.Lint {
		assert.NotContains(t, l, "not durable")
	}
}

func TestListBroken(t *testing.T) {
	var found []crashtest.Failure
	sum := crashtest.Run(t, listWorkload(pushUnlogged), &crashtest.Options{
		Lines:  crashtest.LinesSingle,
		Report: func(f crashtest.Failure) { found = append(found, f) },
	})
	require.NotEmpty(t, found, "crashtest must find the unlogged length")
	f := found[0]
	assert.Contains(t, f.Err.Error(), "length")
	assert.Contains(t, f.Replay, "-crashtest.replay="+f.ID)
	assert.FileExists(t, f.Image)
	assert.LessOrEqual(t, len(f.Lines), 1, "the line set is shrunk")
	t.Logf("found %d failing states, e.g. %s: %v", len(sum.Failures), f.ID, f.Err)
}

// On a device that buffers stores the heap runs another protocol (one
// fence per commit, ranges written back after the record); the same
// workloads must hold there, and the broken one must still be caught:
// its unlogged store never reaches the file at all.
func TestListBuffered(t *testing.T) {
	sum := crashtest.Run(t, listWorkload(push), &crashtest.Options{Lines: crashtest.LinesSingle, Torn: true, Buffered: true})
	assert.Zero(t, len(sum.Failures), "failures are reported above")
	assert.Positive(t, sum.Images)
	for _, l := range sum.Lint {
		assert.NotContains(t, l, "not durable")
		assert.NotContains(t, l, "no fence", "a buffered commit leaves its write-back to the next fence on purpose")
	}

	var found []crashtest.Failure
	crashtest.Run(t, listWorkload(pushUnlogged), &crashtest.Options{
		Lines: crashtest.LinesSingle, Buffered: true,
		Report: func(f crashtest.Failure) { found = append(found, f) },
	})
	require.NotEmpty(t, found, "crashtest must find the unlogged length on a buffered device too")
}
