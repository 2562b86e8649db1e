package device

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestHighestGap(t *testing.T) {
	const g = 1 << 30
	cases := []struct {
		name string
		used []Range
		top  uintptr
		n    uintptr
		want uintptr
	}{
		{"right below top", []Range{{Start: 10 * g, Len: g}}, 100 * g, 4 * g, 96 * g},
		{"top inside a mapping", []Range{{Start: 10 * g, Len: g}, {Start: 90 * g, Len: 20 * g}}, 100 * g, 4 * g, 86 * g},
		{"gap too small", []Range{{Start: 10 * g, Len: g}, {Start: 95 * g, Len: g}, {Start: 98 * g, Len: g}}, 100 * g, 4 * g, 91 * g},
		{"unaligned top", []Range{{Start: 10 * g, Len: g}}, 100*g + 12345, g, 99*g + placeAlign*((12345)/placeAlign)},
		{"nothing fits", []Range{{Start: 10 * g, Len: 89 * g}}, 100 * g, 4 * g, 0},
		{"no mapping below", nil, 100 * g, 4 * g, 0},
		// A range to avoid may start low and cover the gaps between
		// mappings above its start.
		{"covering range", []Range{{Start: 10 * g, Len: g}, {Start: 50 * g, Len: g}, {Start: 20 * g, Len: 77 * g}}, 100 * g, 4 * g, 16 * g},
		{"covering everything", []Range{{Start: 10 * g, Len: g}, {Start: 50 * g, Len: g}, {Start: 0, Len: ^uintptr(0)}}, 100 * g, 4 * g, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := highestGap(tc.used, tc.top, tc.n)
			assert.Equal(t, tc.want, got)
			if got != 0 {
				assert.False(t, overlapsAny(Range{Start: got, Len: tc.n}, tc.used))
				assert.LessOrEqual(t, got+tc.n, tc.top)
			}
		})
	}
}

// TestLowPlace: a large reservation goes below the window where mmap
// areas start, clear of every mapping and of the ranges to avoid.
func TestLowPlace(t *testing.T) {
	const n = 256 << 30
	used, ok := mappedRanges()
	if !ok {
		t.Skip("no /proc/self/maps")
	}
	a := lowPlace(n, nil)
	if a == 0 {
		t.Skip("address space too small for a low place")
	}
	assert.False(t, overlapsAny(Range{Start: a, Len: n}, used))
	avoid := []Range{{Start: a, Len: 1 << 20}}
	b := lowPlace(n, avoid)
	assert.NotZero(t, b)
	assert.False(t, overlapsAny(Range{Start: b, Len: n}, avoid), "avoided range taken")
}
