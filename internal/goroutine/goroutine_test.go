package goroutine_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/goroutine"
)

func TestIDStableAndDistinct(t *testing.T) {
	if !goroutine.Supported() {
		t.Skip("goroutine identity is not available on this architecture")
	}
	me := goroutine.ID()
	require.NotZero(t, me)
	// Growing the stack must not change the identity: it is the
	// goroutine's descriptor, not an address on its stack.
	var grow func(n int) uintptr
	grow = func(n int) uintptr {
		var pad [256]byte
		if n == 0 {
			return goroutine.ID() + uintptr(pad[0])
		}
		return grow(n - 1)
	}
	assert.Equal(t, me, grow(200))

	const n = 16
	ids := make([]uintptr, n)
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	release := make(chan struct{})
	ready.Add(n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = goroutine.ID()
			ready.Done()
			<-release // all alive at once, so identities cannot be reused
		}()
	}
	ready.Wait()
	close(release)
	wg.Wait()
	seen := map[uintptr]bool{me: true}
	for _, id := range ids {
		assert.False(t, seen[id], "identity %#x seen twice among live goroutines", id)
		seen[id] = true
	}
}

func BenchmarkID(b *testing.B) {
	for b.Loop() {
		goroutine.ID()
	}
}
