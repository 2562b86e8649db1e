package heap

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSnapMemory: blocks come touched and ready from the filler, closed
// snapshots' blocks are kept up to the bound, and nothing is kept once
// the heap closed the store.
func TestSnapMemory(t *testing.T) {
	m := &snapMemory{}
	a, err := m.arenaBlock()
	require.NoError(t, err)
	require.Len(t, a, arenaBlock)
	x, err := m.indexBlock()
	require.NoError(t, err)
	require.Len(t, x, keptBlock)
	a[len(a)-1], x[len(x)-1] = 7, keptAt{line: 9}
	ready := func() (int, int) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.arena), len(m.index)
	}
	require.Eventually(t, func() bool {
		na, ni := ready()
		return na == aheadBlocks && ni == aheadIndex
	}, 10*time.Second, time.Millisecond, "the filler makes the blocks ahead")

	var arena [][]byte
	var idx keptIndex
	for range keepBlocks {
		a, err := m.arenaBlock()
		require.NoError(t, err)
		x, err := m.indexBlock()
		require.NoError(t, err)
		arena, idx.blocks = append(arena, a), append(idx.blocks, x)
	}
	idx.bits = make([]uint64, 1024)
	m.put(append(arena, a), &idx)
	na, ni := ready()
	require.Equal(t, keepBlocks, na, "arena blocks kept up to the bound")
	require.Equal(t, keepIndex, ni, "index blocks kept for as many lines")
	bits, heads := m.bitmap(1000, 3)
	require.Len(t, bits, 1000)
	require.Len(t, heads, 3)
	require.Equal(t, 1024, cap(bits), "the kept bitmap is reused")
	for _, w := range bits {
		require.Zero(t, w)
	}

	m.drop()
	require.True(t, m.closed)
	a, err = m.arenaBlock()
	require.NoError(t, err)
	x, err = m.indexBlock()
	require.NoError(t, err)
	m.put([][]byte{a}, &keptIndex{blocks: [][]keptAt{x}})
	na, ni = ready()
	require.Zero(t, na+ni, "a closed store keeps nothing")
	m.drop()
}
