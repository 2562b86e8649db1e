package mirror_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/mirror"
)

// TestExplicitEpoch starts mirrors with fencing tokens as epochs: a token
// above the pool's epoch becomes the epoch the replica sees, and a token
// at or below it is refused before anything is sent.
func TestExplicitEpoch(t *testing.T) {
	replicaDir, primaryDir := fastDir(t), fastDir(t)
	srv, addr := startServer(t, replicaDir)
	h := openPrimary(t, primaryDir)
	defer h.Close()

	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t), Epoch: 40}))
	require.NoError(t, err)
	assert.Equal(t, uint64(40), m.Epoch())
	assert.Equal(t, uint64(40), h.Epoch())
	require.NoError(t, commit(t, h, 1))
	flush(t, m)
	require.NoError(t, m.Close())
	rs := srv.Status()
	require.Len(t, rs, 1)
	assert.Equal(t, uint64(40), rs[0].SeenEpoch)

	for _, token := range []uint64{40, 39, 1} {
		_, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t), Epoch: token}))
		require.ErrorIs(t, err, pmemgo.ErrFenced, "token %d", token)
	}
	assert.Equal(t, uint64(40), h.Epoch())
}
