package mirror_test

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// commitN makes n more commits of the workload, counting them in *i.
func commitN(t *testing.T, h *heap.Heap, i *uint64, n int) {
	t.Helper()
	for range n {
		*i++
		require.NoError(t, commit(t, h, *i))
	}
}

// restartServer starts a replica server on dir listening on addr, the
// address of a server closed just before.
func restartServer(t testing.TB, dir, addr string) *mirror.Server {
	t.Helper()
	srv, err := mirror.NewServer(secureServer(t, mirror.ServerOptions{Dir: dir, Logger: testLogger(t)}))
	require.NoError(t, err)
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestCatchUp stops one of two replicas while the primary commits and
// brings it back: from the retained batches when the primary still has
// them (or, in async mode, from the lines pending since), else from a
// snapshot sent while commits go on; a replica with an empty directory
// joins the same way. Both replicas must converge to the primary byte for
// byte.
func TestCatchUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode mirror.Mode
		// retain is Options.RetainBytes; fresh restarts the replica on
		// an empty directory.
		retain int64
		fresh  bool
		// snapshots is how many the restarted replica gets in all, at
		// least: a snapshot is retried if the batches after it are dropped
		// before they are sent.
		snapshots int
	}{
		{"sync resume", mirror.Sync, 0, false, 1},
		{"sync history gone", mirror.Sync, 64 << 10, false, 2},
		{"async resume", mirror.Async, 0, false, 1},
		{"async new replica", mirror.Async, 0, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dirA, dirB := fastDir(t), fastDir(t)
			srvA, addrA := startServer(t, dirA)
			srvB, addrB := startServer(t, dirB)
			h := openPrimary(t, fastDir(t))
			defer h.Close()
			m, err := mirror.Start(h, secure(t, mirror.Options{
				Replicas: []string{addrA, addrB}, Mode: tc.mode, RetainBytes: tc.retain,
				RetryInterval: 5 * time.Millisecond, Logger: testLogger(t),
			}))
			require.NoError(t, err)
			defer m.Close()
			var i uint64
			commits := func(n int) { commitN(t, h, &i, n) }
			commits(100)
			flush(t, m)
			require.NoError(t, srvB.Close())
			commits(200)
			if tc.fresh {
				dirB = fastDir(t)
			}
			srvB = restartServer(t, dirB, addrB)
			// Commits go on while the replica catches up.
			commits(300)
			flush(t, m)
			if st := m.Status()[1].Snapshots; tc.snapshots == 1 {
				assert.Equal(t, 1, st, "the replica resumed")
			} else {
				assert.GreaterOrEqual(t, st, tc.snapshots, "the replica was sent a snapshot")
			}
			require.NoError(t, m.Close())
			primary := append([]byte(nil), h.Device().Bytes()...)
			require.NoError(t, h.Close())

			for _, r := range []struct {
				srv *mirror.Server
				dir string
			}{{srvA, dirA}, {srvB, dirB}} {
				require.NoError(t, r.srv.Close())
				requireConverged(t, r.dir, primary, i)
			}
		})
	}
}

// TestDeltaSnapshot restarts the primary, which starts a new epoch with no
// history: the replica, which missed commits while it was down, is sent a
// snapshot that carries only the chunks in which its copy differs, and
// converges to the primary byte for byte.
func TestDeltaSnapshot(t *testing.T) {
	for _, mode := range []mirror.Mode{mirror.Sync, mirror.Async} {
		t.Run(mode.String(), func(t *testing.T) {
			dir, pdir := fastDir(t), fastDir(t)
			srv, addr := startServer(t, dir)
			h := openPrimary(t, pdir)
			opts := secure(t, mirror.Options{Replicas: []string{addr}, Mode: mode, RetryInterval: 5 * time.Millisecond, Logger: testLogger(t)})
			m, err := mirror.Start(h, opts)
			require.NoError(t, err)
			var i uint64
			commits := func(n int) { commitN(t, h, &i, n) }
			commits(100)
			flush(t, m)
			assert.Equal(t, int64(poolSize), m.Status()[0].SnapshotBytes, "a new replica is sent the whole pool")
			require.NoError(t, h.Close(), "closes the mirror too")

			// The replica is down while the restarted primary commits.
			require.NoError(t, srv.Close())
			h, err = heap.Open(filepath.Join(pdir, "primary.pool"), nil)
			require.NoError(t, err)
			defer h.Close()
			commits(50)
			srv = restartServer(t, dir, addr)
			m, err = mirror.Start(h, opts)
			require.NoError(t, err)
			commits(100) // while the replica catches up
			flush(t, m)
			st := m.Status()[0]
			assert.Equal(t, 1, st.Snapshots)
			assert.Positive(t, st.SnapshotBytes)
			assert.Less(t, st.SnapshotBytes, int64(poolSize/2), "only the chunks that differ are sent")
			t.Logf("delta snapshot: %d of %d bytes", st.SnapshotBytes, poolSize)
			require.NoError(t, m.Close())
			primary := append([]byte(nil), h.Device().Bytes()...)

			require.NoError(t, srv.Close())
			requireConverged(t, dir, primary, i)
		})
	}
}
