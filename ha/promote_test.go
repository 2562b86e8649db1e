package ha_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// TestPromoteCopy promotes a copy of a primary's pool by hand: the copy
// takes a new epoch registered with the coordinator, and the old
// primary's pool is refused from then on, even with the role free.
func TestPromoteCopy(t *testing.T) {
	ctx := context.Background()
	coordDir, replicaDir, dir := t.TempDir(), fastDir(t), fastDir(t)
	_, addr := startReplica(t, replicaDir, nil)
	a := newNode(t, "a", coordDir)
	pathA := filepath.Join(dir, "a.pool")
	hA, err := heap.Open(pathA, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	pA, err := a.start(t, ctx, hA, addr)
	require.NoError(t, err)
	_, err = increment(hA)
	require.NoError(t, err)
	require.NoError(t, pA.Close(ctx))
	require.NoError(t, hA.Close())

	pathB := filepath.Join(dir, "b.pool")
	copyPool(t, pathA, pathB)
	hB, err := heap.Open(pathB, nil)
	require.NoError(t, err)
	term, err := ha.Promote(ctx, hB, a.coord, "orders", "operator")
	require.NoError(t, err)
	assert.Equal(t, term.Token, hB.Epoch())
	require.NoError(t, term.Resign(ctx))
	require.NoError(t, hB.Close())

	hA, err = heap.Open(pathA, nil)
	require.NoError(t, err)
	defer hA.Close()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = a.start(t, short, hA, addr)
	require.ErrorIs(t, err, mirror.ErrStaleEpoch)
	_, err = ha.Promote(short, hA, a.coord, "orders", "operator")
	require.ErrorIs(t, err, mirror.ErrStaleEpoch)
}
