package device_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// newEmulated maps a fresh zeroed file with an Emulator using hook.
func newEmulated(t *testing.T, hook func(device.Event)) (*device.Emulated, *os.File) {
	t.Helper()
	f := newFile(t, t.TempDir(), poolSize)
	e := &device.Emulator{Hook: hook}
	require.Nil(t, e.Device())
	d := mapFile(t, e, f, device.MapRequest{})
	require.Same(t, d, e.Device())
	return e.Device(), f
}

// line returns the bytes of line k of b.
func line(b []byte, k int) []byte {
	return b[k*device.LineSize : (k+1)*device.LineSize]
}

func TestEmulatedDurableOnlyAfterFlushAndFence(t *testing.T) {
	d, f := newEmulated(t, nil)
	const off = 3*device.LineSize + 8
	copy(d.Bytes()[off:], "stored")
	zero := make([]byte, poolSize)

	assert.Equal(t, zero, readFile(t, f), "stored only")
	assert.Equal(t, zero, d.CrashImage(nil), "stored only")
	assert.Equal(t, []int{3}, d.DirtyLines())
	assert.Empty(t, d.PendingLines())

	d.Flush(off, 6)
	assert.Equal(t, zero, readFile(t, f), "flushed only")
	assert.Equal(t, zero, d.CrashImage(nil), "flushed only")
	assert.Equal(t, []int{3}, d.DirtyLines())
	assert.Equal(t, []int{3}, d.PendingLines())

	require.NoError(t, d.Fence())
	assert.Equal(t, d.Bytes(), readFile(t, f))
	assert.Equal(t, d.Bytes(), d.CrashImage(nil))
	assert.Equal(t, d.Bytes(), d.Durable())
	assert.Empty(t, d.DirtyLines())
	assert.Empty(t, d.PendingLines())
}

func TestEmulatedFlushCapturesContentAtFlush(t *testing.T) {
	d, f := newEmulated(t, nil)
	const off = 5 * device.LineSize
	copy(d.Bytes()[off:], "first")
	d.Flush(off, 5)
	copy(d.Bytes()[off:], "later")
	require.NoError(t, d.Fence())

	assert.Equal(t, []byte("first"), readFile(t, f)[off:off+5])
	assert.Equal(t, []int{5}, d.DirtyLines())

	d.Flush(off, 5)
	require.NoError(t, d.Fence())
	assert.Equal(t, []byte("later"), readFile(t, f)[off:off+5], "the second flush captured the later store")
}

func TestEmulatedDirtyLines(t *testing.T) {
	cases := []struct {
		name   string
		stores map[int]string // offset to bytes stored
		want   []int
	}{
		{"none", nil, nil},
		{"one line", map[int]string{70: "x"}, []int{1}},
		{"straddling lines", map[int]string{62: "abcd"}, []int{0, 1}},
		{"several pages", map[int]string{8192: "a", 64: "b", poolSize - 1: "c"}, []int{1, 128, poolSize/device.LineSize - 1}},
		{"same value", map[int]string{640: "\x00\x00"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newEmulated(t, nil)
			for off, s := range tc.stores {
				copy(d.Bytes()[off:], s)
			}
			assert.Equal(t, tc.want, d.DirtyLines())
		})
	}
}

func TestEmulatedCrashImage(t *testing.T) {
	d, _ := newEmulated(t, nil)
	fill := func(k int, c byte) { copy(line(d.Bytes(), k), bytes.Repeat([]byte{c}, device.LineSize)) }
	fill(2, 'a')
	d.Flush(2*device.LineSize, device.LineSize)
	require.NoError(t, d.Fence())
	fill(2, 'b')
	fill(7, 'c')
	fill(100, 'd')

	img := d.CrashImage([]int{7, -1, 1 << 40})
	want := bytes.Clone(d.Durable())
	copy(line(want, 7), line(d.Bytes(), 7))
	assert.Equal(t, want, img)
	assert.Equal(t, bytes.Repeat([]byte{'a'}, device.LineSize), line(img, 2), "line 2 stays as durable")
	assert.Equal(t, make([]byte, device.LineSize), line(img, 100))

	img[0] = 1
	assert.Zero(t, d.Durable()[0], "the image is a copy")
}

func TestEmulatedHook(t *testing.T) {
	type seen struct {
		ev      device.Event
		image   []byte
		pending []int
		dirty   []int
	}
	var log []seen
	var d *device.Emulated
	d, _ = newEmulated(t, func(ev device.Event) {
		log = append(log, seen{ev, d.CrashImage(nil), d.PendingLines(), d.DirtyLines()})
	})

	copy(d.Bytes()[64:], "one")
	d.Flush(64, 3)
	require.NoError(t, d.Fence())
	d.Flush(0, 0)
	require.NoError(t, d.Fence())

	require.Len(t, log, 4)
	wantEvents := []device.Event{
		{Kind: device.EventFlush, Seq: 0, Off: 64, Len: 3},
		{Kind: device.EventFence, Seq: 1},
		{Kind: device.EventFlush, Seq: 2, Off: 0, Len: 0},
		{Kind: device.EventFence, Seq: 3},
	}
	for i, want := range wantEvents {
		assert.Equal(t, want, log[i].ev)
	}
	assert.Empty(t, log[0].pending, "the hook runs before the flush")
	assert.Equal(t, []int{1}, log[1].pending)
	assert.Equal(t, []int{1}, log[1].dirty)
	assert.Zero(t, log[1].image[64], "the hook runs before the fence")
	assert.Equal(t, byte('o'), log[2].image[64])
	assert.Empty(t, log[2].dirty)
}

func TestEmulatedCloseDropsWhatIsNotDurable(t *testing.T) {
	d, f := newEmulated(t, nil)
	copy(d.Bytes()[64:], "fenced")
	d.Flush(64, 6)
	require.NoError(t, d.Fence())
	copy(d.Bytes()[128:], "flushed")
	d.Flush(128, 7)
	copy(d.Bytes()[192:], "stored")
	require.NoError(t, d.Close())

	want := make([]byte, poolSize)
	copy(want[64:], "fenced")
	assert.Equal(t, want, readFile(t, f))

	again := mapFile(t, &device.Emulator{}, f, device.MapRequest{})
	assert.Equal(t, want, again.Bytes())
}

func TestEmulatedStats(t *testing.T) {
	d, _ := newEmulated(t, nil)
	d.Flush(0, 1)
	d.Flush(60, 10)
	require.NoError(t, d.Fence())
	require.NoError(t, d.Fence())
	assert.Equal(t, device.Stats{Flushes: 2, Fences: 2, LinesWrittenBack: 3}, d.Stats())
}

func TestEmulatedLargeFlush(t *testing.T) {
	d, f := newEmulated(t, nil)
	for i := range d.Bytes() {
		d.Bytes()[i] = byte(i)
	}
	d.Flush(0, poolSize)
	require.NoError(t, d.Fence())
	assert.Equal(t, d.Bytes(), readFile(t, f))

	copy(d.Bytes()[64:], "again")
	d.Flush(64, 5)
	require.NoError(t, d.Fence())
	assert.Equal(t, d.Bytes(), readFile(t, f), "fences still work once the big pending list was released")
}

func TestEmulatedNeedsWritableFile(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	ro, err := openReadOnly(f)
	require.NoError(t, err)
	defer ro.Close()
	_, err = (&device.Emulator{}).Map(ro, poolSize, device.MapRequest{})
	assert.Error(t, err)
}

func TestEmulatedReadMethodsAfterClose(t *testing.T) {
	d, _ := newEmulated(t, nil)
	require.NoError(t, d.Close())
	assert.Nil(t, d.CrashImage(nil))
	assert.Nil(t, d.DirtyLines())
	assert.Nil(t, d.PendingLines())
	assert.Nil(t, d.Durable())
}
