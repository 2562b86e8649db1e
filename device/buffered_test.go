package device_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// A store on the buffered device stays in memory until it is flushed;
// a flush puts the line in the file, and the rest of the page stays as it
// was. Nothing unflushed survives Close.
func TestBufferedStoresReachFileOnlyWhenFlushed(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	d, err := device.Buffered{}.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	require.True(t, device.BuffersStores(d))
	var r recorder
	defer d.Subscribe(&r)()

	mem := d.Bytes()
	mem[100] = 1
	mem[4096+8] = 2
	assert.Zero(t, readFile(t, f)[100], "a store is not in the file before its flush")
	d.Flush(100, 1)
	got := readFile(t, f)
	assert.Equal(t, byte(1), got[100], "a flushed line is in the file")
	assert.Zero(t, got[4096+8], "a line not flushed stays out of the file")
	require.NoError(t, d.Fence())
	assert.Equal(t, []string{"wb 64+64", "fence"}, r.log, "subscribers are told of the write-back and the fence")
	require.NoError(t, d.Close())
	assert.Zero(t, readFile(t, f)[4096+8], "Close writes nothing back")
	assert.ErrorIs(t, d.Close(), device.ErrClosed)
	assert.ErrorIs(t, d.Fence(), device.ErrClosed)
}

// The emulated device in buffered mode leaves a crash image with a line as
// it was at its last flush, never with a store made after it, and reports
// only flushed lines as what a crash may add.
func TestEmulatedBufferedCrashImages(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	emu := &device.Emulator{Buffered: true}
	d := mapFile(t, emu, f, device.MapRequest{})
	require.True(t, device.BuffersStores(d))
	e := emu.Device()

	mem := d.Bytes()
	mem[0] = 1
	d.Flush(0, 1)
	mem[0] = 2   // after the flush: never on the media before the next one
	mem[640] = 3 // never flushed
	assert.Equal(t, []int{0}, e.DirtyLines())
	assert.Equal(t, []int{10}, e.UnflushedLines()[1:], "line 0 differs from its flush too")
	img := e.CrashImage([]int{0, 10})
	assert.Equal(t, byte(1), img[0], "the line as flushed")
	assert.Zero(t, img[640], "an unflushed line never reaches the media")
	require.NoError(t, d.Fence())
	assert.Equal(t, byte(1), e.Durable()[0])
	assert.Empty(t, e.DirtyLines())

	plain := &device.Emulator{}
	f2 := newFile(t, t.TempDir(), poolSize)
	d2 := mapFile(t, plain, f2, device.MapRequest{})
	d2.Bytes()[640] = 3
	assert.Equal(t, []int{10}, plain.Device().DirtyLines(), "on persistent memory any store may reach the media")
	assert.Equal(t, byte(3), plain.Device().CrashImage([]int{10})[640])
}
