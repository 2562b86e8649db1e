package device_test

import (
	"fmt"
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// poolSize is the size of the files the tests map: several pages, so that
// page runs and page-wise comparisons are exercised.
const poolSize = 64 << 10

// mappers lists every Mapper, for the tests that hold for all devices.
func mappers() []struct {
	name string
	m    device.Mapper
} {
	return []struct {
		name string
		m    device.Mapper
	}{
		{"msync", device.Msync{}},
		{"buffered", device.Buffered{}},
		{"emulated", &device.Emulator{}},
		{"emulated-buffered", &device.Emulator{Buffered: true}},
		{"private", device.Private{}},
		{"dax-forced", device.Dax{Force: true}},
	}
}

// newFile creates a zeroed file of size bytes in dir, open for reading and
// writing, closed at the end of the test.
func newFile(tb testing.TB, dir string, size int) *os.File {
	tb.Helper()
	f, err := os.CreateTemp(dir, "pool-*")
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = f.Close() })
	require.NoError(tb, f.Truncate(int64(size)))
	return f
}

// mapFile maps f with m and closes the device at the end of the test.
func mapFile(tb testing.TB, m device.Mapper, f *os.File, req device.MapRequest) device.Device {
	tb.Helper()
	d, err := m.Map(f, poolSize, req)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = d.Close() })
	return d
}

// addrRange returns the addresses d's mapping occupies.
func addrRange(d device.Device) device.Range {
	b := d.Bytes()
	return device.Range{Start: uintptr(unsafe.Pointer(unsafe.SliceData(b))), Len: uintptr(len(b))}
}

// readFile returns the current contents of f.
func readFile(tb testing.TB, f *os.File) []byte {
	tb.Helper()
	b, err := os.ReadFile(f.Name())
	require.NoError(tb, err)
	return b
}

// recorder is a Subscriber that logs what it is told.
type recorder struct {
	log []string
}

func (r *recorder) WriteBack(off, n int) { r.log = append(r.log, fmt.Sprintf("wb %d+%d", off, n)) }
func (r *recorder) Fence()               { r.log = append(r.log, "fence") }

// fastDir returns a directory in memory when there is one, so that
// benchmarks measure the device rather than the disk.
func fastDir(tb testing.TB) string {
	tb.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "pmemgo-device-")
		if err == nil {
			tb.Cleanup(func() { _ = os.RemoveAll(dir) })
			return dir
		}
	}
	return tb.TempDir()
}
