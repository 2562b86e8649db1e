package device_test

import (
	"bufio"
	"bytes"
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

func TestMapHintFree(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFile(t, t.TempDir(), poolSize)
			first := mapFile(t, tc.m, f, device.MapRequest{})
			was := addrRange(first)
			require.NoError(t, first.Close())

			again := mapFile(t, tc.m, f, device.MapRequest{Hint: was.Start})
			assert.Equal(t, was.Start, addrRange(again).Start)
		})
	}
}

// TestMapHintAfterOtherMappings closes a mapping, lets the process map
// memory as the Go runtime and the race detector do (anywhere the kernel
// likes, which fills holes from the top down), and maps the file again at
// its old address: a pool is placed where those mappings do not go, so
// that a reopen in the same process keeps its base and rewrites no
// pointer.
func TestMapHintAfterOtherMappings(t *testing.T) {
	type tc struct {
		name string
		m    device.Mapper
		file func(t *testing.T) *os.File
	}
	var cases []tc
	for _, m := range mappers() {
		cases = append(cases, tc{m.name, m.m, func(t *testing.T) *os.File { return newFile(t, t.TempDir(), poolSize) }})
	}
	sealed := device.Sealed{Key: sealKey}
	cases = append(cases, tc{"sealed", sealed, func(t *testing.T) *os.File { return newSealedFile(t, sealed) }})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.file(t)
			first := mapFile(t, tc.m, f, device.MapRequest{})
			was := addrRange(first)
			require.NoError(t, first.Close())
			for range 256 {
				b, err := unix.Mmap(-1, 0, poolSize, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
				require.NoError(t, err)
				t.Cleanup(func() { _ = unix.Munmap(b) })
				if (device.Range{Start: uintptr(unsafe.Pointer(unsafe.SliceData(b))), Len: poolSize}).Overlaps(was) {
					break
				}
			}
			again := mapFile(t, tc.m, f, device.MapRequest{Hint: was.Start})
			assert.Equal(t, was.Start, addrRange(again).Start, "the pool's old place was taken")
		})
	}
}

func TestMapHintInUse(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Two files, so that a shared mapping replacing the first would
			// show different contents rather than the same page cache.
			first := mapFile(t, tc.m, newFile(t, dir, poolSize), device.MapRequest{})
			pattern := bytes.Repeat([]byte("pmemgo!!"), poolSize/8)
			copy(first.Bytes(), pattern)

			hint := addrRange(first).Start
			second := mapFile(t, tc.m, newFile(t, dir, poolSize), device.MapRequest{Hint: hint})
			assert.NotEqual(t, hint, addrRange(second).Start)
			assert.False(t, addrRange(second).Overlaps(addrRange(first)))
			assert.Equal(t, pattern, first.Bytes(), "the mapping at the hint was replaced")
		})
	}
}

func TestMapAvoid(t *testing.T) {
	for _, tc := range mappers() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFile(t, t.TempDir(), poolSize)
			probe := mapFile(t, tc.m, f, device.MapRequest{})
			avoid := addrRange(probe)
			require.NoError(t, probe.Close())

			d := mapFile(t, tc.m, f, device.MapRequest{Avoid: []device.Range{avoid}})
			assert.False(t, addrRange(d).Overlaps(avoid), "mapped at %#x, avoiding %#x+%#x",
				addrRange(d).Start, avoid.Start, avoid.Len)
		})
	}
}

func TestMapHintInAvoidFallsBackOutsideIt(t *testing.T) {
	dir := t.TempDir()
	busy := mapFile(t, device.Private{}, newFile(t, dir, poolSize), device.MapRequest{})
	probe := mapFile(t, device.Private{}, newFile(t, dir, poolSize), device.MapRequest{})
	free := addrRange(probe)
	require.NoError(t, probe.Close())

	req := device.MapRequest{Hint: addrRange(busy).Start, Avoid: []device.Range{addrRange(busy), free}}
	d := mapFile(t, device.Private{}, newFile(t, dir, poolSize), req)
	for _, r := range req.Avoid {
		assert.False(t, addrRange(d).Overlaps(r))
	}
}

func TestMapNoAddress(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	before := countMappings(t)
	everywhere := device.Range{Start: 0, Len: ^uintptr(0)}
	_, err := device.Private{}.Map(f, poolSize, device.MapRequest{Avoid: []device.Range{everywhere}})
	require.ErrorIs(t, err, device.ErrNoAddress)
	// The rejected mappings must all be gone; a little slack allows for
	// the runtime mapping memory meanwhile.
	assert.LessOrEqual(t, countMappings(t), before+2)
}

func TestMapBadSize(t *testing.T) {
	f := newFile(t, t.TempDir(), poolSize)
	for _, tc := range mappers() {
		for _, size := range []int{-1, 0, poolSize + 1} {
			_, err := tc.m.Map(f, size, device.MapRequest{})
			assert.Error(t, err, "%s size %d", tc.name, size)
		}
	}
}

// countMappings returns the number of mappings of this process.
func countMappings(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		n++
	}
	return n
}
