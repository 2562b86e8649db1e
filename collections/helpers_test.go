package collections_test

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// testingT is what the helpers need of testing.T and rapid.T.
type testingT interface {
	require.TestingT
	Helper()
	Cleanup(func())
}

// testDir returns a fresh directory, on tmpfs when there is one: the tests
// commit often and msync on a disk would dominate them.
func testDir(t testingT) string {
	t.Helper()
	parent := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "pmemgo-collections-*")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// pool is an open test pool; reopen replaces h.
type pool struct {
	h    *heap.Heap
	path string
}

// newPool creates a pool of 16 MiB and closes it with the offline checker
// at the end of the test.
func newPool(t testingT) *pool {
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
func (p *pool) reopen(t testingT) {
	t.Helper()
	require.NoError(t, p.h.Close())
	var err error
	p.h, err = heap.Open(p.path, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
}

// objects counts the allocated objects of the collections types named
// (leafNode, not arrays of *leafNode), for leak checks.
func objects(h *heap.Heap, names ...string) int {
	n := 0
	for _, ts := range h.Stats().Types {
		for _, name := range names {
			if strings.HasPrefix(ts.Name, "github.com/pmemgo/pmemgo/collections."+name+"[") {
				n += ts.Objects
			}
		}
	}
	return n
}

// stringArrays counts the byte arrays the pool holds: strings.
func stringArrays(h *heap.Heap) int {
	for _, ts := range h.Stats().Types {
		if ts.Name == "uint8" {
			return ts.Objects
		}
	}
	return 0
}
