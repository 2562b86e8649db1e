package device_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/seal"
)

var sealKey = bytes.Repeat([]byte{7}, seal.KeySize)

// newSealedFile formats a sealed file for a pool of poolSize bytes.
func newSealedFile(tb testing.TB, m device.Sealed) *os.File {
	tb.Helper()
	return newSealedFileSize(tb, m, poolSize)
}

// newSealedFileSize formats a sealed file for a pool of size bytes.
func newSealedFileSize(tb testing.TB, m device.Sealed, size int64) *os.File {
	tb.Helper()
	f, err := os.CreateTemp(fastDir(tb), "sealed-*")
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = f.Close() })
	require.NoError(tb, m.Format(f, size, [16]byte{1, 2}))
	return f
}

func TestSealedDevice(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	d, err := m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	assert.False(t, device.SharesFile(d))
	mem := d.Bytes()
	require.Len(t, mem, poolSize)
	assert.Equal(t, make([]byte, poolSize), mem, "a new sealed pool reads as zeros")

	var r recorder
	cancel := d.Subscribe(&r)
	marker := []byte("plaintext-marker-0123456789")
	copy(mem[4096+10:], marker)
	d.Flush(4096+10, len(marker))
	require.NoError(t, d.Fence())
	cancel()
	assert.Equal(t, []string{"wb 4096+64", "fence"}, r.log, "subscribers see plaintext offsets, whole lines")

	// Stored but never flushed: not in the file.
	copy(mem[8192:], marker)
	require.NoError(t, d.Close())
	file := readFile(t, f)
	assert.False(t, bytes.Contains(file, marker))
	assert.True(t, seal.IsBlank(file[seal.RecordOff(8192):]))
	assert.False(t, seal.IsBlank(file[seal.RecordOff(4096):]))

	d, err = m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, marker, d.Bytes()[4096+10:4096+10+len(marker)])
	assert.Equal(t, make([]byte, len(marker)), d.Bytes()[8192:8192+len(marker)])

	r2, size, err := m.PoolReader(f)
	require.NoError(t, err)
	assert.Equal(t, int64(poolSize), size)
	got := make([]byte, 100)
	_, err = r2.ReadAt(got, 4096)
	require.NoError(t, err)
	assert.Equal(t, marker, got[10:10+len(marker)])
	_, err = io.ReadFull(io.NewSectionReader(r2, 0, 64), got[:64])
	require.NoError(t, err)
}

// TestSealedDeviceCrash maps a sealed file through the emulated device:
// lines flushed and fenced are durable, lines only flushed are not.
func TestSealedDeviceCrash(t *testing.T) {
	emu := &device.Emulator{}
	m := device.Sealed{Key: sealKey, Inner: emu}
	f := newSealedFile(t, m)
	d, err := m.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	mem := d.Bytes()
	binary.LittleEndian.PutUint64(mem[0:], 1)
	d.Flush(0, 8)
	require.NoError(t, d.Fence())
	binary.LittleEndian.PutUint64(mem[64:], 2)
	d.Flush(64, 8)
	assert.Equal(t, []int{64 + 2, 64 + 3}, emu.Device().PendingLines(), "the record of line 1 is pending, as two lines of the sealed file")
	require.NoError(t, d.Close()) // a crash: the second flush was never fenced

	d, err = device.Sealed{Key: sealKey}.Map(f, poolSize, device.MapRequest{})
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, uint64(1), binary.LittleEndian.Uint64(d.Bytes()[0:]))
	assert.Equal(t, uint64(0), binary.LittleEndian.Uint64(d.Bytes()[64:]))
}

func TestSealedDeviceErrors(t *testing.T) {
	m := device.Sealed{Key: sealKey}
	f := newSealedFile(t, m)
	_, err := m.Map(f, poolSize*2, device.MapRequest{})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	_, err = device.Sealed{Key: bytes.Repeat([]byte{8}, seal.KeySize)}.Map(f, poolSize, device.MapRequest{})
	require.ErrorIs(t, err, pmemgo.ErrBadKey)
	plain := newFile(t, fastDir(t), poolSize)
	_, err = m.Map(plain, poolSize, device.MapRequest{})
	require.ErrorIs(t, err, pmemgo.ErrBadKey)
	_, _, err = m.PoolReader(plain)
	require.ErrorIs(t, err, pmemgo.ErrBadKey)
	require.NoError(t, f.Truncate(seal.FileSize(poolSize)-1))
	_, err = m.Map(f, poolSize, device.MapRequest{})
	require.ErrorIs(t, err, pmemgo.ErrTruncated)
}

// BenchmarkSealedCommit is BenchmarkCommit on the emulated and msync
// devices with and without sealing: the difference is what sealing adds
// to a small transaction's six flushed lines.
func BenchmarkSealedCommit(b *testing.B) {
	for _, tc := range []struct {
		name  string
		inner func() device.Mapper
	}{
		{"emulated", func() device.Mapper { return &device.Emulator{} }},
		{"msync", func() device.Mapper { return device.Msync{} }},
	} {
		for _, sealed := range []bool{false, true} {
			name := tc.name
			var d device.Device
			if sealed {
				name += "-sealed"
			}
			b.Run(name, func(b *testing.B) {
				if sealed {
					m := device.Sealed{Key: sealKey, Inner: tc.inner()}
					d = mapFile(b, m, newSealedFile(b, m), device.MapRequest{})
				} else {
					d = mapFile(b, tc.inner(), newFile(b, fastDir(b), poolSize), device.MapRequest{})
				}
				mem := d.Bytes()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					for step := range 3 {
						for _, off := range []int{step * 4096, step*4096 + 8192 + (i%8)*64} {
							binary.LittleEndian.PutUint64(mem[off:], uint64(i))
							d.Flush(off, 8)
						}
						if err := d.Fence(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/commit")
			})
		}
	}
}

// TestSealedDeviceLargeFlush flushes thousands of lines at once, as a
// commit of a large object does: the lines are sealed in parts, one
// session per sealing goroutine, read back after a reopen, and match the
// digest the parts summed.
func TestSealedDeviceLargeFlush(t *testing.T) {
	const size = 1 << 20
	m := device.Sealed{Key: sealKey}
	f := newSealedFileSize(t, m, size)
	d, err := m.Map(f, size, device.MapRequest{})
	require.NoError(t, err)
	mem := d.Bytes()
	const n = 5000 * device.LineSize
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(mem[4096+i:], uint64(i)+1)
	}
	d.Flush(4096+8, n-16)
	require.NoError(t, d.Fence())
	require.NoError(t, d.Close())

	file := readFile(t, f)
	salts := map[string]bool{}
	for l := range n / device.LineSize {
		rec := seal.RecordOff(int64(4096 + l*device.LineSize))
		require.False(t, seal.IsBlank(file[rec:]), "line %d not sealed", l)
		salts[string(file[rec:rec+16])] = true
	}
	assert.LessOrEqual(t, len(salts), runtime.GOMAXPROCS(0))

	d, err = m.Map(f, size, device.MapRequest{})
	require.NoError(t, err)
	defer d.Close()
	checked, _ := device.SealedDigestChecked(d)
	assert.True(t, checked, "closed cleanly: the digest was checked")
	for i := 0; i < n; i += 8 {
		require.Equal(t, uint64(i)+1, binary.LittleEndian.Uint64(d.Bytes()[4096+i:]), "offset %d", 4096+i)
	}
}

// BenchmarkSealedOpen maps a sealed 128 MiB pool, every line written
// (full) or 1% of them (sparse), and closes it: the open reads every
// record, opens and digests those written. cpu-ms is the process's
// processor time (user and system, page faults included) per open, a
// figure less disturbed than the time by other work on the machine.
func BenchmarkSealedOpen(b *testing.B) {
	const size = 128 << 20
	for _, tc := range []struct {
		name  string
		every int
	}{{"full", 1}, {"sparse", 100}} {
		b.Run(tc.name, func(b *testing.B) {
			m := device.Sealed{Key: sealKey}
			f := newSealedFileSize(b, m, size)
			d, err := m.Map(f, size, device.MapRequest{})
			require.NoError(b, err)
			mem := d.Bytes()
			for off := 0; off < size; off += 64 * tc.every {
				mem[off] = 1
				d.Flush(off, 1)
			}
			require.NoError(b, d.Fence())
			require.NoError(b, d.Close())
			cpu0 := cpuTime(b)
			for b.Loop() {
				d, err := m.Map(f, size, device.MapRequest{})
				require.NoError(b, err)
				require.NoError(b, d.Close())
			}
			b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms")
			b.ReportMetric(float64(size)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "pool-GB/s")
		})
	}
}

// cpuTime returns the processor time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
