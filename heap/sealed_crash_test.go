package heap_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// newSealedCapture returns a capture of the crash images of a sealed file
// mapped by an emulated inner device. A record is written whole or not at
// all, as a sector is (see package seal): the variants put whole records
// on top of what is durable, never half of one.
func newSealedCapture() *capture {
	c := &capture{variants: true, sealed: true, seen: map[uint64]bool{}}
	c.emu = &device.Emulator{Hook: c.hook}
	return c
}

// recordLines returns the emulated device's lines of the records that
// hold a dirty line, grouped by record. The sealed header's used part,
// in the file's first 128 bytes, counts as a record: it lies in one
// sector.
func recordLines(dirty []int) [][]int {
	const perRecord = seal.RecordSize / device.LineSize
	var out [][]int
	for _, l := range dirty {
		first := l - l%perRecord
		if len(out) > 0 && out[len(out)-1][0] == first {
			continue
		}
		rec := make([]int, perRecord)
		for i := range rec {
			rec[i] = first + i
		}
		out = append(out, rec)
	}
	return out
}

// TestCrashSealedTransactions enumerates the crash points of the
// transactions of TestCrashTransactions on a sealed pool: every image of
// the sealed file opens with the key, at a new base, to the state before
// or after the transaction.
func TestCrashSealedTransactions(t *testing.T) {
	cases := crashCases()
	if testing.Short() {
		cases = cases[:3]
	}
	total := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { total += crashSealed(t, tc) })
	}
	t.Logf("sealed transactions: %d crash images checked", total)
}

// sealedCrashPoolSize is the smallest pool: every crash image is a copy of
// the whole sealed file, twice the pool's size.
const sealedCrashPoolSize = 1 << 20

func crashSealed(t *testing.T, tc crashCase) int {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	key := newKey(t)
	h, err := heap.Open(path, &heap.Options{Size: sealedCrashPoolSize, Key: key})
	require.NoError(t, err)
	require.NoError(t, h.Update(tc.setup))
	if tc.prep != nil {
		require.NoError(t, h.Update(tc.prep))
	}
	before := snapshot(t, h)
	require.NoError(t, h.Close())

	c := newSealedCapture()
	h, err = heap.Open(path, &heap.Options{Device: c.emu, Key: key})
	require.NoError(t, err)
	c.armed = true
	err = h.Update(tc.op)
	c.armed = false
	if tc.fails {
		require.ErrorIs(t, err, errAbort)
	} else {
		require.NoError(t, err)
	}
	after := snapshot(t, h)
	require.NoError(t, h.Close())
	require.NotEmpty(t, c.images)

	p := filepath.Join(dir, "image.pool")
	for i, img := range c.images {
		require.NoError(t, os.WriteFile(p, img, 0o600))
		h, err := heap.Open(p, &heap.Options{Key: key, ForceRelocate: true})
		require.NoError(t, err, "image %d of %d", i, len(c.images))
		got := snapshot(t, h)
		require.NoError(t, h.Close())
		if got != before && got != after {
			t.Fatalf("image %d of %d: state is neither before nor after:\n--- got\n%s--- before\n%s--- after\n%s", i, len(c.images), got, before, after)
		}
	}
	t.Logf("%s: %d crash images taken, %d distinct ones checked", tc.name, c.points, len(c.images))
	return len(c.images)
}

// TestCrashSealedCreate crashes the creation of a sealed pool at every
// point: each image is refused as not yet a pool, or opens empty.
func TestCrashSealedCreate(t *testing.T) {
	dir := fastTempDir(t)
	key := newKey(t)
	c := newSealedCapture()
	c.armed = true
	h, err := heap.Open(filepath.Join(dir, "new.pool"), &heap.Options{Size: sealedCrashPoolSize, Device: c.emu, Key: key})
	c.armed = false
	require.NoError(t, err)
	empty := snapshot(t, h)
	require.NoError(t, h.Close())
	opened := 0
	p := filepath.Join(dir, "image.pool")
	for i, img := range c.images {
		require.NoError(t, os.WriteFile(p, img, 0o600))
		h, err := heap.Open(p, &heap.Options{Key: key, ForceRelocate: true})
		if err != nil {
			// Before the pool header's records are durable, the sealed
			// file holds no pool: it is refused, never half-made.
			require.True(t, errors.Is(err, pmemgo.ErrNotPool) || errors.Is(err, pmemgo.ErrCorrupt), "image %d: %v", i, err)
			continue
		}
		require.Equal(t, empty, snapshot(t, h), "image %d", i)
		require.NoError(t, h.Close())
		opened++
	}
	require.Positive(t, opened)
}
