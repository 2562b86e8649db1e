package ha_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/etcdtest"
)

// coordinators returns, for each implementation, a function making a
// coordinator (one per node) with a short lease.
func coordinators(t *testing.T) []struct {
	name string
	make func(t *testing.T) ha.Coordinator
} {
	dir := t.TempDir()
	var etcd *etcdtest.Server
	return []struct {
		name string
		make func(t *testing.T) ha.Coordinator
	}{
		{"leasefile", func(t *testing.T) ha.Coordinator {
			c, err := ha.NewLeaseFile(dir, ha.LeaseFileOptions{TTL: time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			return c
		}},
		{"etcd", func(t *testing.T) ha.Coordinator {
			if etcd == nil {
				etcd = etcdtest.Start(t, "ha-test")
			}
			c, err := ha.NewEtcd(etcd.NewClient(t), ha.EtcdOptions{TTL: time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			return c
		}},
	}
}

// openPool opens a fresh pool, closed after the test.
func openPool(t testing.TB) *heap.Heap {
	t.Helper()
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func emptyUpdate(h *heap.Heap) error { return h.Update(func(*heap.Tx) error { return nil }) }

// TestCampaignIsExclusive checks that one node at a time holds a pool's
// role, that the others are told who holds it, and that each grant's
// token is larger than the one before.
func TestCampaignIsExclusive(t *testing.T) {
	for _, impl := range coordinators(t) {
		t.Run(impl.name, func(t *testing.T) {
			a, b := impl.make(t), impl.make(t)
			ctx := context.Background()
			ta, err := a.Campaign(ctx, ha.Candidate{Pool: "orders", Node: "a"})
			require.NoError(t, err)
			l, err := b.Leader(ctx, "orders")
			require.NoError(t, err)
			assert.Equal(t, "a", l.Node)
			assert.Equal(t, ta.Token, l.Token)

			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, err = b.Campaign(short, ha.Candidate{Pool: "orders", Node: "b"})
			require.ErrorIs(t, err, pmemgo.ErrFenced)
			assert.Contains(t, err.Error(), "a holds token")

			require.NoError(t, ta.Resign(ctx))
			<-ta.Done()
			tb, err := b.Campaign(ctx, ha.Candidate{Pool: "orders", Node: "b"})
			require.NoError(t, err)
			assert.Greater(t, tb.Token, ta.Token)
			l, err = a.Leader(ctx, "orders")
			require.NoError(t, err)
			assert.Equal(t, ha.Leader{Node: "b", Token: tb.Token}, ha.Leader{Node: l.Node, Token: l.Token})

			_, err = a.Leader(ctx, "other")
			require.ErrorIs(t, err, ha.ErrNoLeader)
			_, err = a.Campaign(ctx, ha.Candidate{Pool: "../x", Node: "a"})
			require.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
		})
	}
}

// TestLostLeaseFencesBeforeRegrant partitions the primary from its
// coordinator (its renewals stop): its heap refuses commits with
// ErrFenced, and it does so before the role is granted to another node.
func TestLostLeaseFencesBeforeRegrant(t *testing.T) {
	for _, impl := range coordinators(t) {
		t.Run(impl.name, func(t *testing.T) {
			a, b := impl.make(t), impl.make(t)
			ctx := context.Background()
			h := openPool(t)
			ta, err := a.Campaign(ctx, ha.Candidate{Pool: "p", Node: "a"})
			require.NoError(t, err)
			ta.Fence(h)
			require.NoError(t, emptyUpdate(h))
			ta.PauseRenewals()

			tb, err := b.Campaign(ctx, ha.Candidate{Pool: "p", Node: "b"})
			require.NoError(t, err)
			// The new term exists: the old primary must already be fenced.
			require.ErrorIs(t, h.LeaseErr(), pmemgo.ErrFenced)
			require.ErrorIs(t, emptyUpdate(h), pmemgo.ErrFenced)
			assert.Greater(t, tb.Token, ta.Token)
			<-ta.Done()
			require.ErrorIs(t, ta.Err(), pmemgo.ErrFenced)
			t.Logf("old term: %v", ta.Err())
		})
	}
}

// TestMinToken checks that a grant fences the pool's earlier epochs.
func TestMinToken(t *testing.T) {
	c, err := ha.NewLeaseFile(t.TempDir(), ha.LeaseFileOptions{})
	require.NoError(t, err)
	defer c.Close()
	term, err := c.Campaign(context.Background(), ha.Candidate{Pool: "p", Node: "a", MinToken: 100})
	require.NoError(t, err)
	assert.Equal(t, uint64(101), term.Token)

	e, err := ha.NewEtcd(etcdtest.Start(t, "ha-test").NewClient(t), ha.EtcdOptions{TTL: time.Second})
	require.NoError(t, err)
	defer e.Close()
	_, err = e.Campaign(context.Background(), ha.Candidate{Pool: "p", Node: "a", MinToken: 1 << 40})
	require.ErrorIs(t, err, pmemgo.ErrFenced)
	assert.Contains(t, err.Error(), "not above the pool's epoch")
}

// TestLeaseFileDeadHolder checks that a holder whose process is gone is
// replaced at once rather than when its lease runs out.
func TestLeaseFileDeadHolder(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	b, err := json.Marshal(map[string]any{"token": 7, "node": "gone", "pid": dead.Process.Pid, "expires_unix_nano": time.Now().Add(time.Hour).UnixNano()})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "p.lease"), b, 0o644))

	c, err := ha.NewLeaseFile(dir, ha.LeaseFileOptions{TTL: time.Hour})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	term, err := c.Campaign(ctx, ha.Candidate{Pool: "p", Node: "b"})
	require.NoError(t, err)
	assert.Equal(t, uint64(8), term.Token)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "q.lease"), []byte("{torn"), 0o644))
	_, err = c.Campaign(ctx, ha.Candidate{Pool: "q", Node: "b"})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
}

// TestEtcdRestart stops etcd while a primary replicates in sync mode,
// for longer than the lease: the primary is fenced; once etcd is back, a
// new primary is elected from the replica's copy with a larger token,
// never while the old one could still commit, and it holds every commit
// the old one acknowledged.
func TestEtcdRestart(t *testing.T) {
	srv := etcdtest.Start(t, "ha-test")
	ctx := context.Background()
	// A lease of 3 s leaves room for renewals on a loaded machine: the
	// commits before the stop must not outlive it.
	coord := func() ha.Coordinator {
		c, err := ha.NewEtcd(srv.NewClient(t), ha.EtcdOptions{TTL: 3 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := coord(), coord()
	replicaDir, dir := fastDir(t), fastDir(t)
	rs, addr := startReplica(t, replicaDir, nil)
	hA, err := heap.Open(filepath.Join(dir, "a.pool"), &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	defer hA.Close()
	pA, err := ha.StartPrimary(ctx, hA, ha.PrimaryOptions{Coordinator: a, Pool: "p", Node: "a", Mirror: syncMirror(t, addr, nil)})
	require.NoError(t, err)
	var acked uint64
	for range 20 {
		acked, err = increment(hA)
		require.NoError(t, err)
	}

	t0 := time.Now()
	srv.Stop()
	t.Logf("etcd stopped after %v", time.Since(t0))
	select {
	case <-pA.Term().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("term outlived its lease with etcd down")
	}
	_, err = increment(hA)
	require.ErrorIs(t, err, pmemgo.ErrFenced)
	t.Logf("fenced after %v", time.Since(t0))
	srv.Start()
	t.Logf("etcd restarted after %v", time.Since(t0))

	pathB := filepath.Join(dir, "b.pool")
	copyPool(t, replicaPool(t, replicaDir), pathB)
	hB, err := heap.Open(pathB, nil)
	require.NoError(t, err)
	defer hB.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	pB, err := ha.StartPrimary(cctx, hB, ha.PrimaryOptions{Coordinator: b, Pool: "p", Node: "b", Mirror: syncMirror(t, addr, nil)})
	require.NoError(t, err)
	t.Logf("b elected after %v", time.Since(t0))
	assert.Greater(t, pB.Term().Token, pA.Term().Token)
	_, err = increment(hA)
	require.ErrorIs(t, err, pmemgo.ErrFenced)
	n, err := increment(hB)
	require.NoError(t, err)
	assert.Equal(t, acked+1, n, "the new primary holds every acknowledged commit")
	l, err := b.Leader(ctx, "p")
	require.NoError(t, err)
	assert.Equal(t, "b", l.Node)
	require.NoError(t, pB.Close(ctx))
	require.NoError(t, rs.Close())
	assert.Equal(t, acked+1, counterOf(t, replicaPool(t, replicaDir)))
}
