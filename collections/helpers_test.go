package collections_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// testDir returns a fresh directory, on tmpfs when there is one: the tests
// commit often and msync on a disk would dominate them.
func testDir(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "pmemgo-collections-*"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// pool is an open test pool; reopen replaces h.
type pool struct {
	h    *heap.Heap
	path string
}

// newPool creates a pool of 16 MiB and closes it with the offline checker
// at the end of the test.
func newPool(t testing.TB) *pool {
	t.Helper()
	p := &pool{path: filepath.Join(testDir(t), "map.pool")}
	var err error
	p.h, err = heap.Open(p.path, &heap.Options{Size: 16 << 20})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, p.h.Close())
		err := recovery.CheckFile(p.path, func(pr recovery.Problem) bool {
			t.Errorf("checker: %s", pr)
			return true
		})
		require.NoError(t, err)
	})
	return p
}

// reopen closes the pool and opens it again at a new base, so that every
// pointer of the maps is swizzled.
func (p *pool) reopen(t testing.TB) {
	t.Helper()
	require.NoError(t, p.h.Close())
	var err error
	p.h, err = heap.Open(p.path, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
}

// objects counts the allocated objects whose type name contains one of
// names, for leak checks.
func objects(h *heap.Heap, names ...string) int {
	n := 0
	for _, ts := range h.Stats().Types {
		for _, name := range names {
			if strings.Contains(ts.Name, name) {
				n += ts.Objects
			}
		}
	}
	return n
}
