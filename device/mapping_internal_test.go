package device

import (
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBesideAddrs(t *testing.T) {
	page := uintptr(pageSize)
	const maxAddr = ^uintptr(0)
	cases := []struct {
		name string
		a    Range
		n    uintptr
		want [2]uintptr
	}{
		{"room both sides", Range{Start: 100 * page, Len: 10 * page}, 4 * page, [2]uintptr{96 * page, 110 * page}},
		{"unaligned range", Range{Start: 100*page + 1, Len: 10 * page}, 4 * page, [2]uintptr{96 * page, 111 * page}},
		{"no room below", Range{Start: 2 * page, Len: page}, 4 * page, [2]uintptr{0, 3 * page}},
		{"range wraps", Range{Start: 100 * page, Len: maxAddr}, page, [2]uintptr{99 * page, 0}},
		{"no room above", Range{Start: maxAddr - 2*page + 1, Len: page}, 4 * page, [2]uintptr{maxAddr - 6*page + 1, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, besideAddrs(tc.a, tc.n))
		})
	}
}

func TestMapBesideLandsNextToTheAvoidedRange(t *testing.T) {
	const size = 16 << 12
	f, err := os.CreateTemp(t.TempDir(), "pool-*")
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))

	// A free range with free space around it: the middle of a larger
	// mapping that is then dropped.
	b, unmap, err := mapFile(f, size, false, MapRequest{})
	require.NoError(t, err)
	whole := addrRange(b)
	require.NoError(t, unmap())
	avoid := Range{Start: whole.Start + 4<<12, Len: 8 << 12}

	got, ok := mapBeside(f, 4<<12, false, avoid, []Range{avoid})
	require.True(t, ok)
	defer func() { assert.NoError(t, unmapFixed(got)()) }()
	r := addrRange(got)
	assert.False(t, r.Overlaps(avoid))
	assert.True(t, r.Start+r.Len == avoid.Start || r.Start == avoid.Start+avoid.Len,
		"mapped at %#x, beside %#x+%#x", r.Start, avoid.Start, avoid.Len)
}

// TestMapLowConcurrent maps pools from many goroutines at once: each
// lands below the mmap window, although they look for a place at the
// same moment and so find the same one.
func TestMapLowConcurrent(t *testing.T) {
	const n, size = 16, 1 << 20
	probe := lowPlace(size, nil)
	if probe == 0 {
		t.Skip("address space too small for a low place")
	}
	f, err := os.CreateTemp(t.TempDir(), "pool-*")
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	got := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			b, unmap, err := mapFile(f, size, true, MapRequest{})
			if assert.NoError(t, err) {
				got[i] = b
				t.Cleanup(func() { _ = unmap() })
			}
		})
	}
	wg.Wait()
	for i, b := range got {
		if b != nil {
			// Every low place is at or below the first one found.
			assert.LessOrEqual(t, addrRange(b).Start, probe, "mapping %d placed by the kernel", i)
		}
	}
}
