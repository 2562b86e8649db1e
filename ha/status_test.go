package ha_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// TestStatus asks for a pool's status with no primary, with a primary
// replicating to its standby, and after the standby promoted on a
// guardian's handoff: the primary and its token, the standby's replica
// and whether it is the current primary's, and the last handoff.
func TestStatus(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	sbDir := filepath.Join(dir, "standby")
	sb := runStandby(t, coord, sbDir, newRecorder(t))
	opts := ha.StatusOptions{Pool: "orders", Coordinator: coord, Standbys: []string{sb.replica}, TLS: tlstesting.Default(t).PrimaryConfig(), StandbyDir: sbDir}
	ctx := context.Background()

	st, err := ha.Status(ctx, opts)
	require.NoError(t, err)
	assert.Nil(t, st.Primary)
	require.Len(t, st.Standbys, 1)
	assert.Empty(t, st.Standbys[0].Error)
	assert.Empty(t, st.Standbys[0].Pools)
	assert.Nil(t, st.Promotion)

	path := filepath.Join(dir, "app.pool")
	h, p := startApp(t, coord, path, sb.replica, mirror.Sync, 5)
	st, err = ha.Status(ctx, opts)
	require.NoError(t, err)
	require.NotNil(t, st.Primary)
	assert.Equal(t, "a", st.Primary.Node)
	assert.Equal(t, p.Term().Token, st.Primary.Token)
	require.Len(t, st.Standbys[0].Pools, 1)
	assert.True(t, st.Standbys[0].Current)
	assert.Equal(t, p.Term().Token, st.Standbys[0].Pools[0].Epoch)
	assert.Equal(t, p.Mirror().Seq(), st.Standbys[0].Pools[0].Seq)
	assert.Zero(t, st.Standbys[0].Pools[0].Lag)

	p.Term().PauseRenewals()
	require.NoError(t, h.Close())
	rep, err := newGuard(t, coord, path, sb, 5*time.Second, nil).Save(ctx)
	require.NoError(t, err)
	sb.wait(t)
	st, err = ha.Status(ctx, opts)
	require.NoError(t, err)
	assert.Nil(t, st.Primary, "the guardian resigned")
	assert.NotEmpty(t, st.Standbys[0].Error, "the promoted standby no longer serves replicas")
	require.NotNil(t, st.Promotion)
	require.NotNil(t, st.LastHandoff)
	assert.Equal(t, rep.Handoff.Bytes, st.LastHandoff.Bytes)
	assert.Equal(t, rep.Handoff.Epoch, st.LastHandoff.Epoch)
	assert.Equal(t, rep.Handoff.Seq, st.LastHandoff.Seq)
	assert.Equal(t, st.Promotion.At, st.LastHandoff.At)
	assert.Positive(t, st.LastHandoff.Save)

	_, err = ha.Status(ctx, ha.StatusOptions{Pool: "orders"})
	assert.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	_, err = ha.Status(ctx, ha.StatusOptions{Pool: "../x", Coordinator: coord})
	assert.Error(t, err)
}
