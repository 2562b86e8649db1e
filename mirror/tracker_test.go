package mirror_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// mapDevice maps a fresh file of size bytes with mapper.
func mapDevice(t *testing.T, mapper device.Mapper, size int) device.Device {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "dev"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, f.Truncate(int64(size)))
	dev, err := mapper.Map(f, size, device.MapRequest{})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	return dev
}

// lines expands runs into the set of line indices they cover.
func lines(runs []mirror.Run) map[int]bool {
	set := map[int]bool{}
	for _, r := range runs {
		for off := r.Off; off < r.Off+r.Len; off += device.LineSize {
			set[off/device.LineSize] = true
		}
	}
	return set
}

// TestTrackerExact flushes random ranges on every device and checks that
// the dirty lines are exactly the flushed lines of the tracked pages, in
// sorted, coalesced runs.
func TestTrackerExact(t *testing.T) {
	const size = 1 << 20
	for _, tc := range []struct {
		name   string
		mapper device.Mapper
	}{
		{"msync", device.Msync{}},
		{"emulated", &device.Emulator{}},
		{"private", device.Private{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			dev := mapDevice(t, tc.mapper, size)
			tr := mirror.NewTracker(dev)
			defer tr.Stop()
			tracked := map[int]bool{}
			for range 6 {
				off, n := rng.IntN(size), rng.IntN(64*mirror.PageSize)
				tr.Track(off, n)
				for p := off / mirror.PageSize; p*mirror.PageSize < min(off+n, size) && n > 0; p++ {
					tracked[p] = true
				}
			}
			for round := range 3 {
				want := map[int]bool{}
				for range 200 {
					off, n := rng.IntN(size), 1+rng.IntN(3*mirror.PageSize)
					if rng.IntN(4) == 0 {
						n = 1 + rng.IntN(100)
					}
					dev.Flush(off, n)
					for l := off / device.LineSize; l*device.LineSize < min(off+n, size); l++ {
						if tracked[l*device.LineSize/mirror.PageSize] {
							want[l] = true
						}
					}
				}
				require.NoError(t, dev.Fence())
				runs := tr.Dirty()
				assert.Equal(t, want, lines(runs), "round %d", round)
				assert.Equal(t, len(want)*device.LineSize, tr.DirtyBytes())
				for i := 1; i < len(runs); i++ {
					assert.Greater(t, runs[i].Off, runs[i-1].Off+runs[i-1].Len, "runs %d and %d are not sorted and coalesced", i-1, i)
				}
				assert.Equal(t, runs, tr.Take(nil))
				assert.Empty(t, tr.Dirty(), "after Take")
			}
		})
	}
}

func TestTrackerResetStop(t *testing.T) {
	dev := mapDevice(t, device.Msync{}, 1<<20)
	tr := mirror.NewTracker(dev)
	tr.Track(0, 1<<20)
	dev.Flush(100, 10)
	assert.Equal(t, []mirror.Run{{Off: 64, Len: 64}}, tr.Dirty())
	tr.Reset()
	assert.Empty(t, tr.Dirty())
	dev.Flush(4096-64, 128)
	tr.Stop()
	dev.Flush(8192, 64)
	assert.Equal(t, []mirror.Run{{Off: 4096 - 64, Len: 128}}, tr.Dirty(), "nothing is recorded after Stop")
}

// TestTrackerHeap tracks a heap's pool: a commit's dirty lines include the
// object it changed and nothing outside the pool.
func TestTrackerHeap(t *testing.T) {
	type counter struct{ N uint64 }
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	tr := mirror.NewTracker(h.Device())
	defer tr.Stop()
	tr.Track(0, len(h.Device().Bytes()))
	var off int
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[counter](tx)
		off = int(uintptrOf(c) - h.Base())
		return err
	}))
	tr.Reset()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[counter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, 42)
	}))
	dirty := lines(tr.Dirty())
	assert.True(t, dirty[off/device.LineSize], "the root object's line is dirty")
	for l := range dirty {
		assert.Less(t, l*device.LineSize, len(h.Device().Bytes()))
	}
}
