package ha_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// node is one machine of a scenario: its coordinator client, its logs.
type node struct {
	name  string
	coord ha.Coordinator
	rec   *recorder
}

func newNode(t testing.TB, name, coordDir string) *node {
	c, err := ha.NewLeaseFile(coordDir, ha.LeaseFileOptions{TTL: 400 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &node{name: name, coord: c, rec: newRecorder(t)}
}

func (n *node) start(t *testing.T, ctx context.Context, h *heap.Heap, addr string) (*ha.Primary, error) {
	return ha.StartPrimary(ctx, h, ha.PrimaryOptions{
		Coordinator: n.coord, Pool: "orders", Node: n.name,
		Mirror: syncMirror(t, addr, n.rec.logger()), Logger: n.rec.logger(),
	})
}

// copyPool copies a pool file that nothing writes.
func copyPool(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o644))
}

// TestReturningPrimaryRefused is the first scenario of issue 11: the old
// primary crashes, another node takes over from the replica's copy and
// commits, then the old primary comes back on its own copy of the pool.
// Without ha its restart took the new primary's epoch and the replica
// replaced the new primary's acknowledged commits with its history. With
// ha it is refused while the new primary holds the role (ErrFenced), and
// also once the new primary is gone, since its pool is older than the
// incarnation the new primary registered (ErrStaleEpoch); the replica
// keeps every acknowledged commit.
func TestReturningPrimaryRefused(t *testing.T) {
	ctx := context.Background()
	coordDir, replicaDir, dir := t.TempDir(), fastDir(t), fastDir(t)
	srvRec := newRecorder(t)
	srv, addr := startReplica(t, replicaDir, srvRec.logger())
	a, b := newNode(t, "a", coordDir), newNode(t, "b", coordDir)

	pathA := filepath.Join(dir, "a.pool")
	hA, err := heap.Open(pathA, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	pA, err := a.start(t, ctx, hA, addr)
	require.NoError(t, err)
	for range 20 {
		_, err := increment(hA)
		require.NoError(t, err)
	}
	// A's machine dies: its lease is no longer renewed.
	pA.Term().PauseRenewals()
	require.NoError(t, hA.Close())

	pathB := filepath.Join(dir, "b.pool")
	copyPool(t, replicaPool(t, replicaDir), pathB)
	hB, err := heap.Open(pathB, nil)
	require.NoError(t, err)
	pB, err := b.start(t, ctx, hB, addr)
	require.NoError(t, err)
	assert.Greater(t, pB.Term().Token, pA.Term().Token)
	var last uint64
	for range 20 {
		last, err = increment(hB)
		require.NoError(t, err)
	}
	require.Equal(t, uint64(40), last)

	// A returns while B holds the role.
	hA, err = heap.Open(pathA, nil)
	require.NoError(t, err)
	defer hA.Close()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = a.start(t, short, hA, addr)
	require.ErrorIs(t, err, pmemgo.ErrFenced)
	assert.Contains(t, err.Error(), "b holds token")

	// B's machine dies in turn; A's lease can be granted again, but its
	// copy of the pool lacks B's commits.
	pB.Term().PauseRenewals()
	require.NoError(t, hB.Close())
	long, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = a.start(t, long, hA, addr)
	require.ErrorIs(t, err, mirror.ErrStaleEpoch)
	assert.Contains(t, err.Error(), "older than incarnation")
	assert.NotEmpty(t, a.rec.logged(slog.LevelError, "primary refused"))
	_, err = increment(hA)
	require.NoError(t, err, "the refused pool is left as it was, outside replication")

	require.NoError(t, srv.Close())
	assert.Equal(t, uint64(40), counterOf(t, replicaPool(t, replicaDir)))
}

// TestTwoPrimariesFenced is the second scenario of issue 11: the primary
// is cut off from the coordinator while it runs, and another node takes
// over. Without ha both primaries ran and took the replica from each
// other. With ha the old primary's commits fail with ErrFenced before the
// new one is elected, and when it writes anyway (its fence lifted by
// hand), the replica refuses it as stale, both sides logging an error.
func TestTwoPrimariesFenced(t *testing.T) {
	ctx := context.Background()
	coordDir, replicaDir, dir := t.TempDir(), fastDir(t), fastDir(t)
	srvRec := newRecorder(t)
	srv, addr := startReplica(t, replicaDir, srvRec.logger())
	a, b := newNode(t, "a", coordDir), newNode(t, "b", coordDir)

	hA, err := heap.Open(filepath.Join(dir, "a.pool"), &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	defer hA.Close()
	pA, err := a.start(t, ctx, hA, addr)
	require.NoError(t, err)
	pA.Term().PauseRenewals()
	// A commits until its lease runs out.
	var acked uint64
	for {
		n, err := increment(hA)
		if err != nil {
			require.ErrorIs(t, err, pmemgo.ErrFenced)
			break
		}
		acked = n
	}
	require.NotZero(t, acked)

	pathB := filepath.Join(dir, "b.pool")
	copyPool(t, replicaPool(t, replicaDir), pathB)
	hB, err := heap.Open(pathB, nil)
	require.NoError(t, err)
	defer hB.Close()
	pB, err := b.start(t, ctx, hB, addr)
	require.NoError(t, err)
	require.ErrorIs(t, hA.LeaseErr(), pmemgo.ErrFenced, "the old primary must be fenced once a new one is elected")
	var last uint64
	for range 10 {
		last, err = increment(hB)
		require.NoError(t, err)
	}
	assert.Equal(t, acked+10, last)

	// A misbehaves: it ignores its fence and commits.
	hA.ClearLease()
	_, err = increment(hA)
	require.ErrorIs(t, err, mirror.ErrStaleEpoch)
	t.Logf("rogue commit: %v", err)
	// The commit learns of the refusal from the acknowledgement it waits
	// for; the session that read it logs it on its own goroutine.
	logged := func(r *recorder, msg string) func() bool {
		return func() bool { return len(r.logged(slog.LevelError, msg)) > 0 }
	}
	assert.Eventually(t, logged(a.rec, "refused this primary"), 10*time.Second, 10*time.Millisecond)
	assert.Eventually(t, logged(srvRec, "refused primary"), 10*time.Second, 10*time.Millisecond)
	assert.Eventually(t, logged(a.rec, "primary role lost"), 10*time.Second, 10*time.Millisecond)

	_, err = increment(hB)
	require.NoError(t, err)
	require.NoError(t, pB.Close(ctx))
	require.NoError(t, srv.Close())
	assert.Equal(t, acked+11, counterOf(t, replicaPool(t, replicaDir)))
}
