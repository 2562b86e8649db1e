package swizzle_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pmemgo/pmemgo/swizzle"
)

func TestRuns(t *testing.T) {
	type area struct{ off, size uint64 }
	tests := []struct {
		name  string
		areas []area
		limit uint64
		want  []swizzle.Run
	}{
		{"none", nil, 100, nil},
		{"one", []area{{10, 20}}, 100, []swizzle.Run{{First: 0, End: 1, Off: 10, Len: 20}}},
		{"gaps are spanned", []area{{10, 20}, {40, 20}, {70, 30}}, 100,
			[]swizzle.Run{{First: 0, End: 3, Off: 10, Len: 90}}},
		{"limit splits", []area{{0, 40}, {50, 40}, {100, 40}, {150, 40}}, 100,
			[]swizzle.Run{{First: 0, End: 2, Off: 0, Len: 90}, {First: 2, End: 4, Off: 100, Len: 90}}},
		{"exactly the limit", []area{{0, 50}, {50, 50}}, 100,
			[]swizzle.Run{{First: 0, End: 2, Off: 0, Len: 100}}},
		{"large area alone", []area{{0, 10}, {10, 500}, {510, 10}}, 100,
			[]swizzle.Run{{First: 0, End: 1, Off: 0, Len: 10}, {First: 1, End: 2, Off: 10, Len: 500}, {First: 2, End: 3, Off: 510, Len: 10}}},
		{"overlap is never joined", []area{{0, 50}, {40, 20}}, 100,
			[]swizzle.Run{{First: 0, End: 1, Off: 0, Len: 50}, {First: 1, End: 2, Off: 40, Len: 20}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := swizzle.Runs(len(tc.areas), func(i int) (uint64, uint64) { return tc.areas[i].off, tc.areas[i].size }, tc.limit)
			assert.Equal(t, tc.want, got)
		})
	}
}
