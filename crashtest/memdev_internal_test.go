package crashtest

import (
	"bytes"
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// TestMemMapper checks that a region opened after the scratch changed
// holds the new image, that what a pool flushed is undone on close, and
// that an open whose ranges to avoid cover every region gets a mapping of
// its own.
func TestMemMapper(t *testing.T) {
	initial := bytes.Repeat([]byte{1}, 1<<20)
	w, err := newWorker(initial)
	require.NoError(t, err)
	defer w.close()
	f, err := os.Open(w.s.path)
	require.NoError(t, err)
	defer f.Close()

	d, err := w.m.Map(f, len(initial), device.MapRequest{})
	require.NoError(t, err)
	assert.Equal(t, initial, d.Bytes())
	d.Bytes()[100] = 9
	d.Flush(100, 1)
	require.NoError(t, d.Close())

	p := &point{extras: []lineData{{line: 3}}}
	w.s.apply(p, []Line{{Index: 3, Words: 8}})
	want := bytes.Clone(w.s.img)
	d, err = w.m.Map(f, len(initial), device.MapRequest{})
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, d.Bytes()), "the flushed store is undone and the new line is there")
	require.NoError(t, d.Close())

	var avoid []device.Range
	for i := range w.m.regions {
		r := &w.m.regions[i]
		require.NoError(t, w.m.mapRegion(r))
		avoid = append(avoid, device.Range{Start: uintptr(unsafe.Pointer(unsafe.SliceData(r.mem))), Len: uintptr(len(r.mem))})
	}
	d, err = w.m.Map(f, len(initial), device.MapRequest{Avoid: avoid})
	require.NoError(t, err)
	got := device.Range{Start: uintptr(unsafe.Pointer(unsafe.SliceData(d.Bytes()))), Len: uintptr(len(d.Bytes()))}
	for _, a := range avoid {
		assert.False(t, got.Overlaps(a))
	}
	assert.True(t, bytes.Equal(want, d.Bytes()))
	require.NoError(t, d.Close())
}
