package heap_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// goodPool returns the bytes of a closed pool with a few objects of
// several types, and its path.
func goodPool(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "good.pool")
	h, err := heap.Open(path, &heap.Options{Size: 1 << 20, SlabSize: 16 << 10})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 40) }))
	require.NoError(t, h.Close())
	return path, readFile(t, path)
}

// openImage writes img to path and opens it; it asserts that a failed open
// left the file as it was.
func openImage(t *testing.T, path string, img []byte, opts *heap.Options) error {
	t.Helper()
	require.NoError(t, os.WriteFile(path, img, 0o600))
	h, err := heap.Open(path, opts)
	if err == nil {
		return h.Close()
	}
	assert.True(t, bytes.Equal(img, readFile(t, path)), "a failed open must not write the pool")
	return err
}

func TestBadInput(t *testing.T) {
	path, good := goodPool(t)
	hdr, _ := poolMeta(t, good)
	reversion := func(img []byte, slot int) {
		h, err := layout.DecodeHeader(img[layout.SlotOff(slot):])
		require.NoError(t, err)
		h.Version = layout.Version + 1
		h.Encode(img[layout.SlotOff(slot):])
	}
	cases := []struct {
		name   string
		damage func(img []byte) []byte
		want   error
		says   string
	}{
		{"empty file", func([]byte) []byte { return nil }, pmemgo.ErrNotPool, "no pool header"},
		{"random bytes", func(img []byte) []byte {
			for i := range img {
				img[i] = byte(i*7 + 3)
			}
			return img
		}, pmemgo.ErrNotPool, "magic"},
		{"truncated to a page", func(img []byte) []byte { return img[:4096] }, pmemgo.ErrTruncated, "header records"},
		{"truncated header", func(img []byte) []byte { return img[:100] }, pmemgo.ErrTruncated, "too short"},
		{"truncated by a slab", func(img []byte) []byte { return img[:len(img)-16<<10] }, pmemgo.ErrTruncated, "header records"},
		{"wrong magic in both slots", func(img []byte) []byte {
			copy(img[0:], "NOTAPOOL")
			copy(img[layout.SlotSize:], "NOTAPOOL")
			return img
		}, pmemgo.ErrNotPool, "magic"},
		{"wrong magic in one slot", func(img []byte) []byte {
			copy(img[layout.SlotSize:], "NOTAPOOL")
			return img
		}, pmemgo.ErrCorrupt, "slot B at offset 4096"},
		{"newer version", func(img []byte) []byte { reversion(img, 0); reversion(img, 1); return img }, pmemgo.ErrVersion, fmt.Sprintf("format version %d", layout.Version+1)},
		{"newer version in one slot", func(img []byte) []byte { reversion(img, 1); return img }, pmemgo.ErrVersion, "slot B"},
		{"log generation flipped", func(img []byte) []byte {
			img[hdr.LogOff+layout.LogGenOff] ^= 1
			return img
		}, pmemgo.ErrCorrupt, "generation word"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.damage(append([]byte(nil), good...))
			err := openImage(t, path, img, nil)
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.says)
		})
	}
}

// TestMetadataBitFlips flips a bit in every byte of every piece of
// metadata in turn, and asserts that each open fails with a corruption
// error, without a panic and without writing the file.
func TestMetadataBitFlips(t *testing.T) {
	path, good := goodPool(t)
	hdr, st := poolMeta(t, good)
	type region struct {
		name   string
		off, n uint64
	}
	regions := []region{
		{name: "header slot A", off: 0, n: layout.HeaderBytes},
		{name: "header slot B", off: layout.SlotSize, n: layout.HeaderBytes},
		{name: "heap state", off: layout.StateOff, n: layout.StateSize},
		{name: "type table", off: hdr.TypeOff, n: st.TypeBytes},
		{name: "undo log header", off: hdr.LogOff, n: 16},
	}
	layoutSlabs(good, &hdr, st.SlabHigh, func(i uint32, off uint64, n uint64) {
		regions = append(regions, region{name: fmt.Sprintf("slab %d header and bitmap", i), off: off, n: n})
	})
	// Every third byte (a different bit each time) keeps the test quick
	// under the race detector; -short samples more sparsely.
	step := uint64(3)
	if testing.Short() {
		step = 13
	}
	flips := 0
	for _, r := range regions {
		for off := r.off; off < r.off+r.n; off += step {
			img := append([]byte(nil), good...)
			img[off] ^= 1 << (off % 8)
			err := openImage(t, path, img, &heap.Options{ForceRelocate: true})
			if !assert.Error(t, err, "%s: flip at offset %d went unnoticed", r.name, off) {
				continue
			}
			assert.True(t, errors.Is(err, pmemgo.ErrCorrupt) || errors.Is(err, pmemgo.ErrNotPool) || errors.Is(err, pmemgo.ErrVersion),
				"%s: flip at offset %d: %v", r.name, off, err)
			flips++
		}
	}
	t.Logf("%d bit flips in %d metadata regions, each refused", flips, len(regions))
}

// layoutSlabs calls fn with the extent of each used slab's header and
// bitmap.
func layoutSlabs(img []byte, h *layout.Header, high uint32, fn func(i uint32, off, n uint64)) {
	layout.WalkSlabs(img, h, high, func(i uint32, sh *layout.SlabHeader, err error) bool {
		if err == nil {
			fn(i, h.SlabOffset(i), uint64(layout.SlabHeaderSize+layout.BitmapBytes(sh.Slots)))
		}
		return err == nil
	})
}

func TestPointerOutOfRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 2 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	var nextOff uint64
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		nextOff = uint64(uintptr(unsafe.Pointer(&root.Head.Next)) - h.Base())
		return err
	}))
	base := uint64(h.Base())
	require.NoError(t, h.Close())
	img := readFile(t, path)
	size := uint64(len(img))
	for _, bad := range []uint64{base + size, base - 8, 0x10} {
		binaryPut(img[nextOff:], bad)
		err := openImage(t, path, img, &heap.Options{ForceRelocate: true})
		require.ErrorIs(t, err, pmemgo.ErrCorrupt, "pointer %#x", bad)
		assert.Contains(t, err.Error(), "field Next")
		assert.Contains(t, err.Error(), "object")
		assert.Contains(t, err.Error(), "slab")
	}
}

func binaryPut(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
