package layout_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

func TestGrown(t *testing.T) {
	h, err := layout.NewHeader(layout.Geometry{Size: 1 << 20, MaxSize: 64 << 20})
	require.NoError(t, err)
	g, err := layout.Grown(h, 2<<20)
	require.NoError(t, err)
	assert.Equal(t, uint64(2<<20), g.Size)
	assert.Equal(t, h.SlabOff, g.SlabOff, "the slabs do not move")
	assert.Equal(t, h.LogOff, g.LogOff)
	assert.Equal(t, g.SlabOff+g.Slabs*g.SlabSize, g.SumOff, "the summary follows the slabs")
	assert.GreaterOrEqual(t, g.SumSize, layout.SummarySize(g.Slabs))
	assert.LessOrEqual(t, g.SumOff+g.SumSize, g.Size)
	assert.Greater(t, g.Slabs, h.Slabs)
	require.NoError(t, g.Validate())
	assert.True(t, layout.GrowthOf(&h, &g))
	assert.False(t, layout.GrowthOf(&g, &h), "a pool does not shrink")

	// Growing a grown pool moves its summary to the new end.
	g2, err := layout.Grown(g, 64<<20)
	require.NoError(t, err)
	assert.Equal(t, g2.SlabOff+g2.Slabs*g2.SlabSize, g2.SumOff)
	assert.True(t, layout.GrowthOf(&g, &g2))

	// The encoded header round-trips, tail summary and maximum size
	// included.
	b := make([]byte, layout.HeaderBytes)
	g2.Encode(b)
	d, err := layout.DecodeHeader(b)
	require.NoError(t, err)
	assert.Equal(t, g2, d)

	for _, tc := range []struct {
		size uint64
		want error
		msg  string
	}{
		{128 << 20, pmemgo.ErrNoSpace, "beyond the pool's maximum size of 67108864 bytes"},
		{1 << 20, pmemgo.ErrInvalidOptions, "the pool has 1048576 already"},
		{(2 << 20) + 1, pmemgo.ErrInvalidOptions, "not a multiple of 4096"},
		{(1 << 20) + 4096, pmemgo.ErrInvalidOptions, "no room for another 65536-byte slab"},
	} {
		_, err := layout.Grown(h, tc.size)
		require.ErrorIs(t, err, tc.want, tc.msg)
		assert.Contains(t, err.Error(), tc.msg)
	}
}

func TestValidateTailSummary(t *testing.T) {
	h, err := layout.NewHeader(layout.Geometry{Size: 1 << 20})
	require.NoError(t, err)
	g, err := layout.Grown(h, 4<<20)
	require.NoError(t, err)
	bad := g
	bad.SumOff -= g.SlabSize // inside the slabs
	assert.ErrorContains(t, bad.Validate(), "slab summary")
	bad = g
	bad.MaxSize = g.Size - 4096
	assert.ErrorContains(t, bad.Validate(), "maximum size")
	_, err = layout.NewHeader(layout.Geometry{Size: 2 << 20, MaxSize: 1 << 20})
	require.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	assert.Contains(t, err.Error(), "maximum pool size 1048576 is below the pool size")
}
