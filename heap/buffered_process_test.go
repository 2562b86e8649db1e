package heap_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
)

// bufCounter keeps two copies of a count on different lines, changed in
// one transaction: they must always agree.
type bufCounter struct {
	N   uint64
	Pad [16]uint64
	M   uint64
}

// TestBufferedSIGKILL runs a child process that commits on device.Buffered
// and prints each count once Update returned, kills it with SIGKILL at a
// random moment, and reopens the pool with the default device: every
// acknowledged count is there and the two copies agree. The page cache
// outlives the process, so what was written back reached the file, and
// the last commit's write-back, which no fence covered yet, is redone
// from its record.
func TestBufferedSIGKILL(t *testing.T) {
	if path := os.Getenv("PMEMGO_BUFFERED_CHILD"); path != "" {
		bufferedChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Close())
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBufferedSIGKILL$")
		cmd.Env = append(os.Environ(), "PMEMGO_BUFFERED_CHILD="+path)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		kill := 50 + rng.IntN(500)
		var acked uint64
		sc := bufio.NewScanner(out)
		for n := 0; sc.Scan(); n++ {
			if v, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
				acked, err = strconv.ParseUint(v, 10, 64)
				require.NoError(t, err)
			}
			if n == kill {
				require.NoError(t, cmd.Process.Kill())
				break
			}
		}
		_ = cmd.Wait()
		require.Positive(t, acked, "run %d: the child acknowledged nothing", run)

		h, err := heap.Open(path, nil)
		require.NoError(t, err, "run %d", run)
		require.NoError(t, h.View(func(tx *heap.Tx) error {
			c, err := heap.Root[bufCounter](tx)
			require.NoError(t, err)
			assert.Equal(t, c.N, c.M, "run %d: the two copies disagree", run)
			assert.GreaterOrEqual(t, c.N, acked, "run %d: an acknowledged commit was lost", run)
			return nil
		}))
		require.NoError(t, h.Close())
		checkPool(t, path)
		t.Logf("run %d: killed after count %d", run, acked)
	}
}

func bufferedChild(path string) {
	h, err := heap.Open(path, &heap.Options{Device: device.Buffered{}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for {
		var n uint64
		err := h.Update(func(tx *heap.Tx) error {
			c, err := heap.Root[bufCounter](tx)
			if err != nil {
				return err
			}
			n = c.N + 1
			if err := heap.Set(tx, &c.N, n); err != nil {
				return err
			}
			return heap.Set(tx, &c.M, n)
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintf(w, "acked %d\n", n)
		w.Flush()
	}
}
