package heap_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// bigTagsTx allocates a node whose tags take n uint32s.
func bigTagsTx(n int) func(tx *heap.Tx) error {
	return func(tx *heap.Tx) error {
		if err := addNodes(tx, 0, 1); err != nil {
			return err
		}
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		if err := heap.FreeSlice(tx, root.Head.Tags); err != nil {
			return err
		}
		root.Head.Tags, err = heap.MakeSlice[uint32](tx, 2, n)
		return err
	}
}

// TestGrowMaxSize: a pool grows by doubling up to its maximum size and no
// further; the allocation that does not fit fails with ErrNoSpace naming
// the sizes, rolled back, and what fits still does.
func TestGrowMaxSize(t *testing.T) {
	h, path := openTemp(t, &heap.Options{Size: 1 << 20, MaxSize: 3 << 20})
	require.NoError(t, h.Update(bigTagsTx(300_000))) // 1.2 MB: one doubling
	assert.Equal(t, uint64(2<<20), h.Stats().Size)
	before := snapshot(t, h)

	err := h.Update(bigTagsTx(1 << 20)) // 4 MB: beyond the maximum
	require.ErrorIs(t, err, pmemgo.ErrNoSpace)
	assert.Contains(t, err.Error(), "within its maximum size of 3145728 bytes")
	assert.Equal(t, before, snapshot(t, h), "the failed transaction is rolled back")
	assert.Equal(t, uint64(2<<20), h.Stats().Size, "no growth for what would not fit anyway")

	require.NoError(t, h.Update(bigTagsTx(150_000))) // fits at 3 MiB, capped
	st := h.Stats()
	assert.Equal(t, uint64(3<<20), st.Size, "the last doubling is capped by MaxSize")
	assert.Equal(t, 2, st.Growths)

	err = h.Grow(4 << 20)
	require.ErrorIs(t, err, pmemgo.ErrNoSpace)
	assert.Contains(t, err.Error(), "beyond the pool's maximum size of 3145728 bytes")
	require.NoError(t, h.Grow(1<<20), "a pool already large enough is left as it is")
	require.NoError(t, h.Close())
	checkPool(t, path)

	// A larger maximum at open replaces the recorded one once the open
	// writes the pool.
	h, err = heap.Open(path, &heap.Options{MaxSize: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(bigTagsTx(1<<20)))
	assert.Equal(t, uint64(8<<20), h.Stats().Size)
	require.NoError(t, h.Close())
	h, err = heap.Open(path, nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(8<<20), h.Stats().MaxSize)
	require.NoError(t, h.Close())
	checkPool(t, path)
}

func TestGrowBadOptions(t *testing.T) {
	dir := t.TempDir()
	_, err := heap.Open(filepath.Join(dir, "a.pool"), &heap.Options{Size: 2 << 20, MaxSize: 1 << 20})
	require.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "Options.MaxSize 1048576 is below the pool size")
	_, err = heap.Open(filepath.Join(dir, "b.pool"), &heap.Options{Size: 2 << 20, MaxSize: -1})
	require.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "Options.MaxSize -1 is negative")

	path := filepath.Join(dir, "c.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, h.Stats().MaxSize, uint64(2<<20), "a default maximum is recorded")
	assert.LessOrEqual(t, h.Stats().MaxSize, uint64(heap.DefaultMaxSize))
	require.NoError(t, h.Close())
	_, err = heap.Open(path, &heap.Options{MaxSize: 1 << 20})
	require.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "maximum size 1048576 is below the pool's size 2097152")

	h, err = heap.Open(path, &heap.Options{ReadOnly: true})
	require.NoError(t, err)
	require.ErrorIs(t, h.Grow(4<<20), pmemgo.ErrReadOnly)
	require.NoError(t, h.Close())
}

// fixedMapper maps with Msync but hides the device's growth, as a Mapper
// of a device that cannot grow would.
type fixedMapper struct{}

type fixedDevice struct{ device.Device }

func (fixedMapper) Map(f *os.File, size int, req device.MapRequest) (device.Device, error) {
	d, err := device.Msync{}.Map(f, size, req)
	return fixedDevice{d}, err
}

// TestGrowRefusedByDevice: a device that cannot grow, or one whose
// write-backs a subscriber follows (a mirror), makes an allocation that
// needs more room fail with ErrNoSpace saying why.
func TestGrowRefusedByDevice(t *testing.T) {
	h, _ := openTemp(t, &heap.Options{Size: 1 << 20, Device: fixedMapper{}})
	err := h.Update(bigTagsTx(300_000))
	require.ErrorIs(t, err, pmemgo.ErrNoSpace)
	require.ErrorIs(t, err, device.ErrNoGrowth)
	assert.Contains(t, err.Error(), "does not grow pools")

	h, _ = openTemp(t, &heap.Options{Size: 1 << 20})
	cancel := h.Device().Subscribe(&nopSubscriber{})
	err = h.Update(bigTagsTx(300_000))
	require.ErrorIs(t, err, pmemgo.ErrNoSpace)
	require.ErrorIs(t, err, device.ErrNoGrowth)
	assert.Contains(t, err.Error(), "subscribers")
	cancel()
	require.NoError(t, h.Update(bigTagsTx(300_000)))
}

type nopSubscriber struct{}

func (nopSubscriber) WriteBack(int, int) {}
func (nopSubscriber) Fence()             {}

// TestGrowWithSnapshot: a snapshot taken before a growth keeps the pool
// as it was, old size included, while the pool grows under it.
func TestGrowWithSnapshot(t *testing.T) {
	h, _ := openTemp(t, &heap.Options{Size: 1 << 20})
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	before := snapshot(t, h)
	s, err := h.Snapshot(nil)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, h.Update(bigNode))
	require.Greater(t, h.Stats().Size, uint64(1<<20))
	assert.EqualValues(t, 1<<20, s.Size())
	old, err := s.Open(nil)
	require.NoError(t, err)
	defer old.Close()
	assert.Equal(t, before, snapshot(t, old))
	assert.Equal(t, uint64(1<<20), old.Stats().Size)
}

// TestGrowPoolWithoutMaxSize: a pool made before pools could grow records
// no maximum size; it opens with the default one and grows.
func TestGrowPoolWithoutMaxSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.pool")
	h, err := heap.Open(path, &heap.Options{Size: 1 << 20, MaxSize: 1 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Close())
	img := readFile(t, path)
	for i := range 2 {
		hdr, err := layout.DecodeHeader(img[layout.SlotOff(i):])
		require.NoError(t, err)
		hdr.MaxSize = 0
		hdr.Encode(img[layout.SlotOff(i):])
	}
	require.NoError(t, os.WriteFile(path, img, 0o600))
	checkPool(t, path)

	h, err = heap.Open(path, nil)
	require.NoError(t, err)
	assert.Greater(t, h.Stats().MaxSize, uint64(1<<20), "the default maximum applies")
	require.NoError(t, h.Update(bigTagsTx(300_000)))
	assert.Equal(t, uint64(2<<20), h.Stats().Size)
	require.NoError(t, h.Close())
	checkPool(t, path)
}

// TestGrowWhileSnapshotRead reads a snapshot over and over, whole and in
// ranges, on another goroutine while the pool grows under it three times
// (as a replication mirror reads one for a new replica while commits and
// growths go on): every read shows the image as of the snapshot, on a
// device whose file is read through (msync) and on one read from memory
// (emulated). Run under -race, it also shows the reads race with nothing
// the growth changes.
func TestGrowWhileSnapshotRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mapper device.Mapper
	}{{"msync", nil}, {"emulated", &device.Emulator{}}} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := openTemp(t, &heap.Options{Size: 1 << 20, Device: tc.mapper})
			require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
			s, err := h.Snapshot(nil)
			require.NoError(t, err)
			defer s.Close()
			want := make([]byte, s.Size())
			_, err = s.ReadAt(want, 0)
			require.NoError(t, err)

			done := make(chan struct{})
			var reads atomic.Int64
			var wg sync.WaitGroup
			wg.Go(func() {
				img := make([]byte, s.Size())
				head, tail := make([]byte, 4096), make([]byte, 4096)
				for {
					select {
					case <-done:
						return
					default:
					}
					if _, err := s.ReadAt(img, 0); err != nil || !bytes.Equal(want, img) {
						t.Errorf("read %d: %v, image equal: %v", reads.Load(), err, bytes.Equal(want, img))
						return
					}
					if err := s.ReadRanges([][]byte{head, tail}, []int64{0, s.Size() - 4096}); err != nil ||
						!bytes.Equal(want[:4096], head) || !bytes.Equal(want[len(want)-4096:], tail) {
						t.Errorf("ranges %d: %v", reads.Load(), err)
						return
					}
					reads.Add(1)
				}
			})
			for i := range 3 {
				require.NoError(t, h.Grow(int64(2+i)<<20))
				require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 10*(i+1), 3) }))
			}
			for reads.Load() < 3 {
				time.Sleep(time.Millisecond)
			}
			close(done)
			wg.Wait()
			assert.EqualValues(t, 4<<20, h.Stats().Size)
		})
	}
}
