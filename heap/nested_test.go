package heap_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// returns runs f and fails the test if it has not returned within a
// generous bound: the nested cases used to hang forever.
func returns(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the call did not return: it waits for itself")
		return nil
	}
}

func TestNestedTransactions(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	noop := func(*heap.Tx) error { return nil }
	for _, tc := range []struct {
		name  string
		outer func(func(*heap.Tx) error) error
		inner func() error
	}{
		{"update-in-update", h.Update, func() error { return h.Update(noop) }},
		{"view-in-update", h.Update, func() error { return h.View(noop) }},
		{"update-in-view", h.View, func() error { return h.Update(noop) }},
		{"view-in-view", h.View, func() error { return h.View(noop) }},
		{"close-in-update", h.Update, h.Close},
		{"close-in-view", h.View, h.Close},
		{"register-in-update", h.Update, func() error { return heap.Register[Node](h) }},
		{"new-epoch-in-view", h.View, func() error { _, err := h.NewEpoch(); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inner error
			err := returns(t, func() error {
				return tc.outer(func(*heap.Tx) error {
					inner = tc.inner()
					return inner
				})
			})
			require.ErrorIs(t, inner, pmemgo.ErrNestedTx)
			require.ErrorIs(t, err, pmemgo.ErrNestedTx, "the outer transaction returns the inner error")
		})
	}
	// The heap is still usable, and was not closed by the refused Close.
	require.NoError(t, h.Update(func(tx *heap.Tx) error { _, err := heap.Root[Root](tx); return err }))

	// Reading the heap's figures inside a transaction needs no second lock.
	epoch := h.Epoch()
	require.NoError(t, returns(t, func() error {
		return h.Update(func(*heap.Tx) error {
			assert.Positive(t, h.Stats().SlabsUsed)
			assert.Equal(t, epoch, h.Epoch())
			return nil
		})
	}))
}

func TestContextBoundsTheWait(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()

	holding, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- h.Update(func(*heap.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	ran := false
	mark := func(*heap.Tx) error { ran = true; return nil }
	for name, call := range map[string]func(context.Context) error{
		"update": func(ctx context.Context) error { return h.UpdateContext(ctx, mark) },
		"view":   func(ctx context.Context) error { return h.ViewContext(ctx, mark) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := returns(t, func() error { return call(ctx) })
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded, name)
		require.False(t, ran, "%s: fn must not run when the wait timed out", name)
	}
	close(release)
	require.NoError(t, <-held)

	// Once the lock is free, the same calls go through.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, h.UpdateContext(ctx, mark))
	require.True(t, ran)

	// A context already done runs nothing, even on a free heap.
	done, stop := context.WithCancel(context.Background())
	stop()
	ran = false
	require.ErrorIs(t, h.ViewContext(done, mark), context.Canceled)
	require.ErrorIs(t, h.UpdateContext(done, mark), context.Canceled)
	require.False(t, ran)
}

// TestManyConcurrentViews runs more Views at once than the lock tracks in
// its fixed slots, each nesting a forbidden Update, so that the overflow
// path identifies readers too.
func TestManyConcurrentViews(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	const n = 100
	inside := make(chan struct{}, n)
	release := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- h.View(func(*heap.Tx) error {
				inside <- struct{}{}
				<-release
				return h.Update(func(*heap.Tx) error { return nil })
			})
		}()
	}
	for range n {
		<-inside
	}
	close(release)
	for range n {
		err := returns(t, func() error { return <-errs })
		require.True(t, errors.Is(err, pmemgo.ErrNestedTx), "got %v", err)
	}
	require.NoError(t, h.Update(func(*heap.Tx) error { return nil }))
}
