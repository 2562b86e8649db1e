package remote_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/remote"
)

// TestFaultStorm has more goroutines than Ps fault at once on cold pages,
// half of them inside copy (a runtime memmove that cannot be preempted),
// while the node and the fault handler run outside this process's
// scheduler. A handler in this process would deadlock here once every P
// is held by a goroutine blocked in a fault.
func TestFaultStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	opts := openOpts(dir, "a.backup")
	opts.Size = 16 << 20
	h, err := remote.Open(node.url("storm"), opts)
	require.NoError(t, err)
	build(t, h, 50)
	require.NoError(t, h.Close())

	for round := range 3 {
		h, err := remote.Open(node.url("storm"), openOpts(dir, "cold"+itoa(round)+".backup"))
		require.NoError(t, err)
		mem := h.Device().Bytes()
		workers := 4 * runtime.GOMAXPROCS(0)
		chunk := len(mem) / 2 / workers &^ (remote.PageSize - 1)
		done := make(chan struct{})
		var wg sync.WaitGroup
		sums := make([]int, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				src := mem[len(mem)/2+w*chunk : len(mem)/2+(w+1)*chunk]
				if w%2 == 0 {
					dst := make([]byte, len(src))
					copy(dst, src)
					sums[w] = int(dst[0]) + int(dst[len(dst)-1])
					return
				}
				for i := 0; i < len(src); i += remote.PageSize {
					sums[w] += int(src[i])
				}
			}()
		}
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("faulting goroutines did not complete")
		}
		verify(t, h, 50)
		require.NoError(t, h.Close())
	}
}
