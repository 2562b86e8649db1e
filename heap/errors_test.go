package heap_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

func openTemp(t *testing.T, opts *heap.Options) (*heap.Heap, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.pool")
	if opts == nil {
		opts = &heap.Options{}
	}
	if opts.Size == 0 {
		opts.Size = 4 << 20
	}
	h, err := heap.Open(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := h.Close(); err == nil {
			checkPool(t, path)
		}
	})
	return h, path
}

func countNodes(t *testing.T, h *heap.Heap) int {
	t.Helper()
	n := 0
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil || root == nil {
			return err
		}
		for p := root.Head; p != nil; p = p.Next {
			n++
		}
		return nil
	}))
	return n
}

func nodeObjects(h *heap.Heap) int {
	for _, ts := range h.Stats().Types {
		if ts.Name == "github.com/pmemgo/pmemgo/heap_test.Node" {
			return ts.Objects
		}
	}
	return 0
}

var goHeapNode = &Node{Key: 42}

func TestForeignPointer(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 2) }))
	cases := []struct {
		name  string
		field string
		set   func(tx *heap.Tx, n *Node) error
	}{
		{"pointer to Go heap in a new object", "Next", func(tx *heap.Tx, _ *Node) error {
			n, err := heap.New[Node](tx)
			if err == nil {
				n.Next = goHeapNode
			}
			return err
		}},
		{"Go string in a logged field", "Name", func(tx *heap.Tx, n *Node) error {
			return heap.Set(tx, &n.Name, "a Go string literal")
		}},
		{"Go slice in an array element", "Kids[3]", func(tx *heap.Tx, n *Node) error {
			return heap.Set(tx, &n.Kids[3], goHeapNode)
		}},
		{"Go slice header", "Tags", func(tx *heap.Tx, n *Node) error {
			return heap.Set(tx, &n.Tags, []uint32{1, 2})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, h)
			err := h.Update(func(tx *heap.Tx) error {
				root, err := heap.Root[Root](tx)
				if err != nil {
					return err
				}
				return tc.set(tx, root.Head)
			})
			require.ErrorIs(t, err, pmemgo.ErrForeignPointer)
			assert.Contains(t, err.Error(), "heap_test.Node")
			assert.Contains(t, err.Error(), "field "+tc.field)
			assert.Equal(t, before, snapshot(t, h), "the transaction must roll back")
		})
	}
}

type Versioned struct {
	A uint64
	B *Versioned
}

func TestTypeMismatch(t *testing.T) {
	h, path := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		_, err := heap.Root[Root](tx)
		return err
	}))
	t.Run("root of another type", func(t *testing.T) {
		err := h.Update(func(tx *heap.Tx) error {
			_, err := heap.Root[Node](tx)
			return err
		})
		require.ErrorIs(t, err, pmemgo.ErrTypeMismatch)
		assert.Contains(t, err.Error(), "heap_test.Root")
	})
	t.Run("unsupported field", func(t *testing.T) {
		type withMap struct {
			M map[string]int
		}
		err := heap.Register[withMap](h)
		require.ErrorIs(t, err, pmemgo.ErrUnsupportedType)
		assert.Contains(t, err.Error(), `"M"`)
	})
	t.Run("layout changed", func(t *testing.T) {
		require.NoError(t, heap.Register[Versioned](h))
		require.NoError(t, h.Close())
		// The same name with another layout: the stored descriptor is the
		// old Versioned; registering a changed one must name the field.
		h2, err := heap.Open(path, nil)
		require.NoError(t, err)
		defer func() { h = h2 }()
		require.NoError(t, heap.Register[Versioned](h2), "the unchanged layout matches")
		require.NoError(t, h2.Close())
		// Rewrite the stored layout as if an older build had B as a uint64.
		editStoredType(t, path, "github.com/pmemgo/pmemgo/heap_test.Versioned", func(d *layout.TypeDesc) {
			d.Fields[1].Type = "uint64"
			d.Ptrs = nil
		})
		h2, err = heap.Open(path, nil)
		require.NoError(t, err)
		err = heap.Register[Versioned](h2)
		require.ErrorIs(t, err, pmemgo.ErrTypeMismatch)
		assert.Contains(t, err.Error(), `field "B"`)
		assert.Contains(t, err.Error(), "uint64")
	})
}

func TestNoSpace(t *testing.T) {
	// A pool whose maximum size is its size never grows.
	h, _ := openTemp(t, &heap.Options{Size: 1 << 20, MaxSize: 1 << 20})
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 1) }))
	before := snapshot(t, h)
	err := h.Update(func(tx *heap.Tx) error {
		for {
			if _, err := heap.MakeSlice[byte](tx, 4096, 4096); err != nil {
				return err
			}
		}
	})
	require.ErrorIs(t, err, pmemgo.ErrNoSpace)
	assert.Equal(t, before, snapshot(t, h))
	// The space the rolled-back transaction took is free again.
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		_, err := heap.MakeSlice[byte](tx, 200<<10, 200<<10)
		return err
	}))
}

func TestTxTooLarge(t *testing.T) {
	h, _ := openTemp(t, &heap.Options{Size: 2 << 20, LogSize: 128 << 10})
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		if err := addNodes(tx, 0, 1); err != nil {
			return err
		}
		root, _ := heap.Root[Root](tx)
		var err error
		root.Head.Tags, err = heap.MakeSlice[uint32](tx, 50000, 50000)
		return err
	}))
	before := snapshot(t, h)
	err := h.Update(func(tx *heap.Tx) error {
		root, _ := heap.Root[Root](tx)
		if err := heap.Set(tx, &root.Head.Key, 99); err != nil {
			return err
		}
		return heap.AddSlice(tx, root.Head.Tags) // 200 KB, more than the log holds
	})
	require.ErrorIs(t, err, pmemgo.ErrTxTooLarge)
	assert.Equal(t, before, snapshot(t, h))
}

func TestPanicRollsBack(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	before := snapshot(t, h)
	assert.PanicsWithValue(t, "boom", func() {
		_ = h.Update(func(tx *heap.Tx) error {
			if err := renameAll(tx); err != nil {
				return err
			}
			if err := addNodes(tx, 7, 2); err != nil {
				return err
			}
			panic("boom")
		})
	})
	assert.Equal(t, before, snapshot(t, h))
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 7, 1) }))
	assert.Equal(t, 4, countNodes(t, h))
}

func TestFreeErrors(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 2) }))
	err := h.Update(func(tx *heap.Tx) error {
		root, _ := heap.Root[Root](tx)
		n := root.Head
		require.NoError(t, heap.Free(tx, n))
		assert.ErrorIs(t, heap.Free(tx, n), pmemgo.ErrInvalidFree, "double free")
		assert.ErrorIs(t, heap.Free(tx, &n.Key), pmemgo.ErrInvalidFree, "not an object of that type")
		assert.ErrorIs(t, heap.Free(tx, goHeapNode), pmemgo.ErrNotInPool)
		assert.ErrorIs(t, heap.Free(tx, root), pmemgo.ErrInvalidFree, "the root")
		assert.ErrorIs(t, heap.Add(tx, goHeapNode), pmemgo.ErrNotInPool)
		return errAbort
	})
	require.ErrorIs(t, err, errAbort)
	assert.Equal(t, 2, nodeObjects(h))
}

func TestLockTimeout(t *testing.T) {
	_, path := openTemp(t, nil)
	start := time.Now()
	_, err := heap.Open(path, &heap.Options{Timeout: 50 * time.Millisecond})
	require.ErrorIs(t, err, pmemgo.ErrTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	_, err = heap.Open(path, &heap.Options{Timeout: 20 * time.Millisecond, ReadOnly: true})
	require.ErrorIs(t, err, pmemgo.ErrTimeout, "a reader must wait for the writer too")
	err = recovery.CheckFile(path, func(recovery.Problem) bool { return true })
	require.ErrorIs(t, err, pmemgo.ErrTimeout, "the checker must not check a pool open for writing")
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.pool")
	h, err := heap.Open(path, &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 5) }))
	want := snapshot(t, h)
	require.NoError(t, h.Close())
	before := readFile(t, path)

	// Two readers share the lock; relocation happens in memory only.
	r1, err := heap.Open(path, &heap.Options{ReadOnly: true, ForceRelocate: true})
	require.NoError(t, err)
	r2, err := heap.Open(path, &heap.Options{ReadOnly: true})
	require.NoError(t, err)
	assert.True(t, r1.Recovery().Relocated)
	assert.Equal(t, want, snapshot(t, r1))
	assert.Equal(t, want, snapshot(t, r2))
	assert.ErrorIs(t, r1.Update(func(*heap.Tx) error { return nil }), pmemgo.ErrReadOnly)
	require.NoError(t, r1.Close())
	require.NoError(t, r2.Close())
	assert.Equal(t, before, readFile(t, path), "a read-only open must not write the file")
}

func TestClosed(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Close())
	assert.ErrorIs(t, h.Update(func(*heap.Tx) error { return nil }), pmemgo.ErrClosed)
	assert.ErrorIs(t, h.View(func(*heap.Tx) error { return nil }), pmemgo.ErrClosed)
	assert.ErrorIs(t, h.Close(), pmemgo.ErrClosed)
}

func TestTxClosedAfterClosure(t *testing.T) {
	h, _ := openTemp(t, nil)
	var kept *heap.Tx
	require.NoError(t, h.Update(func(tx *heap.Tx) error { kept = tx; return nil }))
	_, err := heap.New[Node](kept)
	assert.ErrorIs(t, err, pmemgo.ErrTxClosed)
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		_, err := heap.New[Node](tx)
		assert.ErrorIs(t, err, pmemgo.ErrReadOnly)
		return nil
	}))
}

// TestViewDuringUpdate runs readers while a writer commits transactions
// that keep an invariant (Count equals the list length); run it with -race.
func TestViewDuringUpdate(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 1) }))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var views atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				err := h.View(func(tx *heap.Tx) error {
					root, err := heap.Root[Root](tx)
					if err != nil {
						return err
					}
					n := 0
					for p := root.Head; p != nil; p = p.Next {
						n++
					}
					if n != root.Count {
						return errors.New("a view saw a half-done update")
					}
					return nil
				})
				if !assert.NoError(t, err) {
					return
				}
				views.Add(1)
			}
		}()
	}
	for i := range 200 {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			if i%3 == 2 {
				return removeHead(tx)
			}
			return addNodes(tx, 100+i, 1)
		}))
	}
	stop.Store(true)
	wg.Wait()
	assert.Positive(t, views.Load())
}

func TestCommitHooksAndEpoch(t *testing.T) {
	h, path := openTemp(t, nil)
	var calls int
	hookErr := errors.New("replica did not answer")
	cancel := h.OnCommit(func() error { calls++; return nil })
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 1) }))
	require.Error(t, h.Update(func(*heap.Tx) error { return errAbort }))
	assert.Equal(t, 1, calls, "hooks run after commits only")
	cancel()
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 1, 1) }))
	assert.Equal(t, 1, calls)

	h.OnCommit(func() error { return hookErr })
	err := h.Update(func(tx *heap.Tx) error { return addNodes(tx, 2, 1) })
	require.ErrorIs(t, err, hookErr)
	assert.Equal(t, 3, countNodes(t, h), "a hook error does not undo the commit")

	e0 := h.Epoch()
	e1, err := h.NewEpoch()
	require.NoError(t, err)
	assert.Equal(t, e0+1, e1)
	require.NoError(t, h.Close())
	h2, err := heap.Open(path, nil)
	require.NoError(t, err)
	assert.Equal(t, e1, h2.Epoch(), "the epoch is durable")
	require.NoError(t, h2.Close())
}

func TestBadPointer(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 2) }))
	cases := []struct {
		name string
		why  string
		set  func(tx *heap.Tx, root *Root, n *Node) error
	}{
		{"to an object freed in the transaction", "this transaction frees", func(tx *heap.Tx, _ *Root, n *Node) error {
			m, err := heap.New[Node](tx)
			if err != nil {
				return err
			}
			if err := heap.Free(tx, m); err != nil {
				return err
			}
			return heap.Set(tx, &n.Next, m)
		}},
		{"inside an object", "rather than at its start", func(tx *heap.Tx, _ *Root, n *Node) error {
			return heap.Set(tx, &n.Next, (*Node)(unsafe.Pointer(&n.Next.Name)))
		}},
		{"to another type", "another type", func(tx *heap.Tx, root *Root, n *Node) error {
			return heap.Set(tx, &n.Next, (*Node)(unsafe.Pointer(root)))
		}},
		{"slice past its array", "runs past the end", func(tx *heap.Tx, _ *Root, n *Node) error {
			return heap.Set(tx, &n.Tags, unsafe.Slice(unsafe.SliceData(n.Tags), 1000))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, h)
			err := h.Update(func(tx *heap.Tx) error {
				root, err := heap.Root[Root](tx)
				if err != nil {
					return err
				}
				return tc.set(tx, root, root.Head)
			})
			require.ErrorIs(t, err, pmemgo.ErrBadPointer)
			assert.Contains(t, err.Error(), tc.why)
			assert.Equal(t, before, snapshot(t, h), "the transaction must roll back")
		})
	}
}

// TestManyAllocationsOneTx checks that the commit record of a transaction
// allocating many objects side by side stays small: it must fit the log
// that a pool of this size gets by default.
func TestManyAllocationsOneTx(t *testing.T) {
	h, _ := openTemp(t, &heap.Options{Size: 16 << 20})
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		for i := range 50000 {
			n, err := heap.New[Node](tx)
			if err != nil {
				return err
			}
			n.Key, n.Next = uint64(i), root.Head
			root.Head = n
		}
		return nil
	}))
	assert.Equal(t, 50000, countNodes(t, h))
}

func TestEmptyUpdateRunsHooksAndUUIDIsStable(t *testing.T) {
	h, path := openTemp(t, nil)
	calls := 0
	h.OnCommit(func() error { calls++; return nil })
	require.NoError(t, h.Update(func(*heap.Tx) error { return nil }))
	assert.Equal(t, 1, calls, "an empty Update is a commit boundary")
	id := h.UUID()
	assert.NotEqual(t, [16]byte{}, id)
	require.NoError(t, h.Close())
	h2, err := heap.Open(path, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
	assert.Equal(t, id, h2.UUID())
	require.NoError(t, h2.Close())
}

// TestLogThenFreeInOneTx logs objects and then frees them in the same
// transaction, together with what they point at: the commit must not
// check the pointers of objects that are gone at commit.
func TestLogThenFreeInOneTx(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 5) }))
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		// removeHead logs the next node's kids before freeing the head;
		// the next call frees that node and its name.
		for range 4 {
			if err := removeHead(tx); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		require.Equal(t, 1, root.Count)
		return err
	}))
}

// TestOnClose checks that close hooks run once, in order, before the pool
// is unmapped (they may still use the heap), and not once cancelled.
func TestOnClose(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 2) }))
	var ran []string
	h.OnClose(func() {
		// The heap is still open: a hook may finish what it does with it.
		ran = append(ran, "first")
		require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 10, 1) }))
	})
	cancel := h.OnClose(func() { ran = append(ran, "cancelled") })
	h.OnClose(func() {
		ran = append(ran, "second")
		require.NoError(t, h.View(func(tx *heap.Tx) error {
			root, err := heap.Root[Root](tx)
			require.Equal(t, 3, root.Count)
			return err
		}))
	})
	cancel()
	require.NoError(t, h.Close())
	require.ErrorIs(t, h.Close(), pmemgo.ErrClosed)
	assert.Equal(t, []string{"first", "second"}, ran)
}

// TestAddAllOneFence checks that AddAll and AddRanges log many objects
// with one fence, that the changes commit, and that an abandoned
// transaction restores every one of them.
func TestAddAllOneFence(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 50) }))
	before := snapshot(t, h)

	var c deviceCounter
	cancel := h.Device().Subscribe(&c)
	require.NoError(t, h.Update(renameAllBatched))
	cancel()
	assert.Equal(t, 3, c.fences, "one fence for the 50 nodes, one for their 50 tag arrays, one for the commit")
	c = deviceCounter{}
	cancel = h.Device().Subscribe(&c)
	require.NoError(t, h.Update(renameAll))
	cancel()
	assert.Equal(t, 101, c.fences, "logged one by one, each range costs a fence")
	changed := snapshot(t, h)
	require.NotEqual(t, before, changed)

	err = h.Update(func(tx *heap.Tx) error {
		return errors.Join(renameAllBatched(tx), errAbort)
	})
	require.ErrorIs(t, err, errAbort)
	assert.Equal(t, changed, snapshot(t, h), "the abandoned transaction restored every range")

	err = h.Update(func(tx *heap.Tx) error {
		var local Node
		return heap.AddAll(tx, &local)
	})
	require.ErrorIs(t, err, pmemgo.ErrNotInPool)
}

// failingMapper maps pools on the msync device whose fences fail while
// fail is set, as after an I/O error.
type failingMapper struct{ fail *atomic.Bool }

func (m failingMapper) Map(f *os.File, size int, req device.MapRequest) (device.Device, error) {
	d, err := device.Msync{}.Map(f, size, req)
	if err != nil {
		return nil, err
	}
	return failingDevice{d, m.fail}, nil
}

type failingDevice struct {
	device.Device
	fail *atomic.Bool
}

var errIO = errors.New("injected I/O error")

func (d failingDevice) Fence() error {
	if d.fail.Load() {
		return errIO
	}
	return d.Device.Fence()
}

// TestFailedRollbackBreaksHeap makes the rollback of an abandoned
// transaction fail: the heap refuses every later use with that error but
// stays mapped until Close, which runs the close hooks first; reopening
// the pool recovers the state before the transaction.
func TestFailedRollbackBreaksHeap(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	before := snapshot(t, h)
	require.NoError(t, h.Close())

	var fail atomic.Bool
	h, err = heap.Open(path, &heap.Options{Device: failingMapper{&fail}})
	require.NoError(t, err)
	err = h.Update(func(tx *heap.Tx) error {
		if err := renameAll(tx); err != nil {
			return err
		}
		fail.Store(true) // the changes are logged; the rollback's fence fails
		return errAbort
	})
	require.ErrorIs(t, err, errAbort)
	require.ErrorIs(t, err, errIO)
	assert.ErrorIs(t, h.Update(func(*heap.Tx) error { return nil }), errIO, "a broken heap refuses updates")
	assert.ErrorIs(t, h.View(func(*heap.Tx) error { return nil }), errIO, "and views")
	_, err = h.NewEpoch()
	assert.ErrorIs(t, err, errIO)
	hooked := false
	h.OnClose(func() {
		hooked = true
		// Still mapped: what a hook reads is there.
		_ = h.Device().Bytes()[0]
	})
	assert.Error(t, h.Close(), "Close retries the rollback, whose fence still fails")
	assert.True(t, hooked)

	h, err = heap.Open(path, nil)
	require.NoError(t, err)
	assert.Positive(t, h.Recovery().RolledBack, "the reopen rolled the transaction back")
	assert.Equal(t, before, snapshot(t, h))
	require.NoError(t, h.Close())
	checkPool(t, path)
}

type Shelf struct {
	Label string
	Books []*Node
}

// TestForeignPointerInSliceNamesField checks that a bad element of an
// array is named through the field of the object that holds the slice.
func TestForeignPointerInSliceNamesField(t *testing.T) {
	h, _ := openTemp(t, nil)
	for _, logged := range []bool{false, true} {
		err := h.Update(func(tx *heap.Tx) error {
			s, err := heap.New[Shelf](tx)
			if err != nil {
				return err
			}
			if s.Books, err = heap.MakeSlice[*Node](tx, 4, 4); err != nil {
				return err
			}
			if logged {
				// An object that existed before would be logged: Add the
				// slice's elements of a fresh array, as a user who is not
				// sure would.
				if err := heap.AddSlice(tx, s.Books); err != nil {
					return err
				}
			}
			s.Books[2] = goHeapNode
			return nil
		})
		require.ErrorIs(t, err, pmemgo.ErrForeignPointer)
		assert.Contains(t, err.Error(), "heap_test.Shelf")
		assert.Contains(t, err.Error(), "field Books[2]")
	}
}
