package heap_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

// The tests in this file cover invariant 6 of DESIGN.md: once Update
// returned nil, nothing the application does afterwards (a store outside
// any transaction included) and no crash makes recovery roll that
// transaction back.

// strayRoot is what the stray-store tests keep: the root and a counter.
func strayCount(t *testing.T, h *heap.Heap) (root bool, count int) {
	t.Helper()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[Root](tx)
		if r != nil {
			root, count = true, r.Count
		}
		return err
	}))
	return root, count
}

func TestStrayStoreDoesNotUndoCommit(t *testing.T) {
	for _, tc := range []struct {
		name string
		// existing creates the root before the committed Update, which then
		// only changes it; otherwise that Update allocates the root.
		existing bool
		// next runs another Update after the stray store, before Close.
		next bool
	}{
		{name: "root-allocated-by-commit"},
		{name: "existing-root", existing: true},
		{name: "stray-then-update", existing: true, next: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(fastTempDir(t), "p.pool")
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			h, err := heap.Open(path, &heap.Options{Size: 4 << 20, Logger: logger})
			require.NoError(t, err)
			if tc.existing {
				require.NoError(t, h.Update(func(tx *heap.Tx) error { _, err := heap.Root[Root](tx); return err }))
			}
			var r *Root
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				var err error
				if r, err = heap.Root[Root](tx); err != nil {
					return err
				}
				return heap.Set(tx, &r.Count, 1)
			}))
			r.Count = 2 // a stray store outside any transaction
			if tc.next {
				require.NoError(t, h.Update(func(tx *heap.Tx) error {
					_, err := heap.New[Node](tx)
					return err
				}))
			}
			require.NoError(t, h.Close())
			st := h.Stats()
			assert.EqualValues(t, 1, st.Tx.StrayStores, "the stray store is counted once")
			assert.Contains(t, logs.String(), "changed outside any transaction")
			assert.Contains(t, logs.String(), "heap_test.Root", "the warning names the object's type")
			if tc.next {
				assert.Contains(t, logs.String(), "before the next transaction")
			} else {
				assert.Contains(t, logs.String(), "at close")
			}

			h, err = heap.Open(path, &heap.Options{ForceRelocate: true})
			require.NoError(t, err)
			defer h.Close()
			root, count := strayCount(t, h)
			require.True(t, root, "the committed root must survive the stray store")
			assert.Equal(t, 2, count, "a clean Close keeps memory as the application left it")
			checkPoolOpen(t, h)
		})
	}
}

// checkPoolOpen checks the pool of an open heap by closing and
// reopening it around the offline checker.
func checkPoolOpen(t *testing.T, h *heap.Heap) {
	t.Helper()
	require.NoError(t, h.Close())
	checkPool(t, h.Path())
}

// TestCrashAfterStrayStore enumerates crash points through a committed
// Update, a stray store into what it committed, and Close: every image
// taken once Update returned must recover to the committed state (with or
// without the stray store), never to the state before.
func TestCrashAfterStrayStore(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing-root=%v", existing), func(t *testing.T) {
			dir := fastTempDir(t)
			path := filepath.Join(dir, "p.pool")
			h, err := heap.Open(path, &heap.Options{Size: crashPoolSize})
			require.NoError(t, err)
			if existing {
				require.NoError(t, h.Update(func(tx *heap.Tx) error { _, err := heap.Root[Root](tx); return err }))
			}
			before := snapshot(t, h)
			require.NoError(t, h.Close())

			c := newCapture(true)
			h, err = heap.Open(path, &heap.Options{Device: c.emu})
			require.NoError(t, err)
			var r *Root
			c.armed = true
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				if r, err = heap.Root[Root](tx); err != nil {
					return err
				}
				return heap.Set(tx, &r.Count, 1)
			}))
			committed := len(c.images)
			after := snapshot(t, h)
			r.Count = 2
			strayed := snapshot(t, h)
			c.hook(device.Event{}) // a crash right after the stray store, any dirty lines durable
			require.NoError(t, h.Close())
			c.armed = false

			require.Greater(t, len(c.images), committed, "crash points after the commit")
			for i, img := range c.images {
				got := reopenImage(t, dir, img)
				if i < committed {
					if got != before && got != after {
						t.Fatalf("image %d (during Update): neither before nor after:\n%s", i, got)
					}
					continue
				}
				if got != after && got != strayed {
					t.Fatalf("image %d of %d (after Update returned): the acknowledged commit was undone:\n--- got\n%s--- committed\n%s", i, len(c.images), got, after)
				}
			}
			t.Logf("%d images during the Update, %d after it returned", committed, len(c.images)-committed)
		})
	}
}

func TestTxStats(t *testing.T) {
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	var r *Root
	require.NoError(t, h.Update(func(tx *heap.Tx) error { r, err = heap.Root[Root](tx); return err }))
	s0 := h.Stats().Tx
	assert.EqualValues(t, 1, s0.Commits)
	assert.Positive(t, s0.BytesLogged)

	require.NoError(t, h.Update(func(tx *heap.Tx) error { return heap.Set(tx, &r.Count, 7) }))
	s1 := h.Stats().Tx
	assert.EqualValues(t, 2, s1.Commits)
	assert.EqualValues(t, 2, s1.Fences-s0.Fences, "a one-field Update pays two fences: its undo entry, its commit record")
	assert.Greater(t, s1.BytesLogged, s0.BytesLogged)

	require.ErrorIs(t, h.Update(func(tx *heap.Tx) error {
		if err := heap.Set(tx, &r.Count, 8); err != nil {
			return err
		}
		return errAbort
	}), errAbort)
	s2 := h.Stats().Tx
	assert.EqualValues(t, 1, s2.Rollbacks)
	assert.EqualValues(t, 2, s2.Commits)
	assert.Zero(t, s2.StrayStores)
	_, count := strayCount(t, h)
	assert.Equal(t, 7, count)
}
