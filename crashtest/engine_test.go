package crashtest_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

// The engine's own persistence paths, enumerated with crashtest: alloc,
// free, commit, abort and swizzle, each exhaustively for a small case (all
// subsets of the dirty lines when there are few, and torn lines).

var errAbort = errors.New("abort on purpose")

func engineOps() []crashtest.Op {
	return []crashtest.Op{
		{Name: "alloc", Run: func(h *heap.Heap) error { return push(h, 1) }},
		{Name: "commit", Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				l, _ := heap.Root[List](tx)
				return errors.Join(heap.Set(tx, &l.Head.Val, 100), heap.Set(tx, &l.Head.Next.Val, 200))
			})
		}},
		{Name: "free", Run: func(h *heap.Heap) error {
			return h.Update(func(tx *heap.Tx) error {
				l, _ := heap.Root[List](tx)
				n := l.Head
				if err := heap.Add(tx, l); err != nil {
					return err
				}
				l.Head, l.Len = n.Next, l.Len-1
				return heap.Free(tx, n)
			})
		}},
		{Name: "abort", Run: func(h *heap.Heap) error {
			err := h.Update(func(tx *heap.Tx) error {
				l, _ := heap.Root[List](tx)
				n, err := heap.New[ListNode](tx)
				if err != nil {
					return err
				}
				if err := heap.Add(tx, l); err != nil {
					return err
				}
				l.Head, l.Len = n, l.Len+1
				return errors.Join(heap.Free(tx, n), errAbort)
			})
			if errors.Is(err, errAbort) {
				return nil
			}
			return err
		}},
		crashtest.Relocate(),
	}
}

// engineStates lists the list's values before and after each operation.
var engineStates = []string{"[0]", "[1 0]", "[100 200]", "[200]", "[200]", "[200]"}

func listValues(h *heap.Heap) (string, error) {
	var vals []uint64
	err := h.View(func(tx *heap.Tx) error {
		l, err := heap.Root[List](tx)
		if err != nil {
			return err
		}
		for n := l.Head; n != nil; n = n.Next {
			vals = append(vals, n.Val)
		}
		if uint64(len(vals)) != l.Len {
			return fmt.Errorf("length %d, %d nodes", l.Len, len(vals))
		}
		return nil
	})
	return fmt.Sprint(vals), err
}

func TestEngineCrashStates(t *testing.T) {
	w := crashtest.Workload{
		Size:     1 << 20,
		SlabSize: 16 << 10,
		Setup:    func(h *heap.Heap) error { return push(h, 0) },
		Ops:      engineOps(),
		Check: func(h *heap.Heap, op int) error {
			got, err := listValues(h)
			if err != nil {
				return err
			}
			if got != engineStates[op] && got != engineStates[op+1] {
				return fmt.Errorf("list %s during %s: want %s or %s", got, engineOps()[op].Name, engineStates[op], engineStates[op+1])
			}
			// Nothing the rolled-back or interrupted operation allocated may
			// stay allocated.
			for _, ts := range h.Stats().Types {
				if strings.HasSuffix(ts.Name, ".ListNode") && ts.Objects != strings.Count(got, " ")+1 {
					return fmt.Errorf("%d nodes allocated, %s reachable", ts.Objects, got)
				}
			}
			return nil
		},
	}
	opts := &crashtest.Options{Flushes: true, Lines: crashtest.LinesAll, K: 2, Torn: true}
	if testing.Short() {
		opts = &crashtest.Options{Lines: crashtest.LinesSingle}
	}
	sum := crashtest.Run(t, w, opts)
	assert.Zero(t, len(sum.Failures), "failures are reported above")
	assert.False(t, sum.Truncated, "the budget must cover every state")
	t.Logf("engine: %d crash points, %d distinct images checked", sum.CrashPoints, sum.Images)
}

// TestReplay checks that a replay id selects exactly one state.
func TestReplayCommand(t *testing.T) {
	var found []crashtest.Failure
	crashtest.Run(t, listWorkload(pushUnlogged), &crashtest.Options{Lines: crashtest.LinesSingle, Report: func(f crashtest.Failure) { found = append(found, f) }})
	require.NotEmpty(t, found)
	assert.Contains(t, found[0].Replay, "go test ./crashtest -run '^TestReplayCommand$' -crashtest.replay=")
	assert.Equal(t, ".pool", filepath.Ext(found[0].Image))
}
