//go:build linux

package heap_test

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// A pool larger than the machine's memory must still open for reading
// and check: both map it privately (copy-on-write, so that recovery runs
// in memory without writing the file), and a private writable mapping is
// charged in full against the kernel's overcommit limit unless it says
// MAP_NORESERVE. Only the pages written are ever copied.
func TestPoolLargerThanMemoryOpensReadOnlyAndChecks(t *testing.T) {
	var si syscall.Sysinfo_t
	require.NoError(t, syscall.Sysinfo(&si))
	ram := int64(si.Totalram) * int64(si.Unit)
	size := max(int64(64)<<30, (ram+int64(si.Totalswap)*int64(si.Unit))*2) &^ (1<<30 - 1)
	path := filepath.Join(t.TempDir(), "big.pool")

	type node struct {
		Next *node
		V    int
	}
	h, err := heap.Open(path, &heap.Options{Size: size})
	if err != nil {
		t.Skipf("cannot create a sparse %d GiB pool here: %v", size>>30, err)
	}
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[node](tx)
		if err != nil {
			return err
		}
		n, err := heap.New[node](tx)
		if err != nil {
			return err
		}
		n.V = 42
		return heap.Set(tx, &r.Next, n)
	}))
	require.NoError(t, h.Close())

	ro, err := heap.Open(path, &heap.Options{ReadOnly: true, ForceRelocate: true})
	require.NoError(t, err, "read-only open of a %d GiB pool", size>>30)
	require.NoError(t, ro.View(func(tx *heap.Tx) error {
		r, err := heap.Root[node](tx)
		if err != nil {
			return err
		}
		require.NotNil(t, r.Next)
		assert.Equal(t, 42, r.Next.V)
		return nil
	}))
	require.NoError(t, ro.Close())

	var problems []recovery.Problem
	require.NoError(t, recovery.CheckFile(path, func(p recovery.Problem) bool {
		problems = append(problems, p)
		return true
	}), "check of a %d GiB pool", size>>30)
	assert.Empty(t, problems)
}
