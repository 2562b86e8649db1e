package swizzle_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pmemgo/pmemgo/swizzle"
)

func TestTableRelocate(t *testing.T) {
	const size = 1 << 20
	tab := swizzle.Table{Old: []uint64{0x10000000, 0x30000000}, Target: 0x20000000, Size: size}
	cases := []struct {
		name     string
		p        uint64
		resuming bool
		want     uint64
		ok       bool
	}{
		{"nil stays nil", 0, false, 0, true},
		{"first old range", 0x10000000 + 64, false, 0x20000000 + 64, true},
		{"second old range", 0x30000000 + size - 8, false, 0x20000000 + size - 8, true},
		{"one past an old range", 0x10000000 + size, false, 0, false},
		{"below every range", 0x8, false, 0, false},
		{"already at the target, fresh swizzle", 0x20000000 + 8, false, 0, false},
		{"already at the target, resumed swizzle", 0x20000000 + 8, true, 0x20000000 + 8, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab.Resuming = tc.resuming
			got, ok := tab.Relocate(tc.p)
			assert.Equal(t, tc.ok, ok)
			if ok {
				assert.Equal(t, tc.want, got)
			}
		})
	}
}
