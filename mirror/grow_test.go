package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// growingPrimary is a replica server and a primary pool of poolSize
// bytes, sealed under key or plain, for the growth tests.
type growingPrimary struct {
	t         *testing.T
	key       []byte
	dir, addr string
	h         *heap.Heap
	// want lists the names pushed, newest first.
	want []string
}

func newGrowingPrimary(t *testing.T, sealed bool) *growingPrimary {
	g := &growingPrimary{t: t, dir: fastDir(t)}
	if sealed {
		g.key = newMirrorKey(t)
	}
	var srv *mirror.Server
	srv, g.addr = startServer(t, g.dir)
	t.Cleanup(func() { srv.Close() })
	var err error
	g.h, err = heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize, Key: g.key})
	require.NoError(t, err)
	t.Cleanup(func() { g.h.Close() })
	return g
}

// push links a node named name into the pool's list.
func (g *growingPrimary) push(name string) {
	g.t.Helper()
	require.NoError(g.t, pushName(g.h, name))
	g.want = append([]string{name}, g.want...)
}

// TestReplicaFollowsGrowth grows a pool, plain and sealed, while its
// mirror runs, sync and async: by Heap.Grow, then by an allocation too
// large for the pool, inside a transaction. Each replica grows its copy
// in the same epoch and resumes where it was, with no second snapshot,
// and ends with the primary's size and every commit.
func TestReplicaFollowsGrowth(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		for _, mode := range []mirror.Mode{mirror.Sync, mirror.Async} {
			t.Run(fmt.Sprintf("sealed=%v/%v", sealed, mode), func(t *testing.T) {
				g := newGrowingPrimary(t, sealed)
				h, key, dir, push := g.h, g.key, g.dir, g.push
				m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{g.addr}, Mode: mode, Logger: testLogger(t)}))
				require.NoError(t, err)
				defer m.Close()
				push("before the growth")
				flush(t, m)
				require.NoError(t, h.Grow(2*poolSize))
				push("after Grow")
				// A name larger than the grown pool's free space: the
				// allocation grows the pool again, mid-transaction.
				push("big" + strings.Repeat("x", 3*poolSize))
				push("after the allocation's growth")
				flush(t, m)
				st := h.Stats()
				require.Equal(t, 2, st.Growths)
				require.Greater(t, st.Size, uint64(2*poolSize))
				rs := m.Status()[0]
				assert.Equal(t, "streaming", rs.State)
				assert.Equal(t, 1, rs.Snapshots, "a replica was sent a snapshot again after a growth")
				require.NoError(t, m.Close())

				path := replicaFile(t, dir)
				fi, err := os.Stat(path)
				require.NoError(t, err)
				size := int64(st.Size)
				if sealed {
					size = seal.FileSize(size)
				}
				assert.Equal(t, size, fi.Size(), "the replica's size")
				got := names(t, path, key)
				assert.True(t, slices.Equal(g.want, got), "the replica holds %d names, the primary %d", len(got), len(g.want))
			})
		}
	}
}

// TestReplicaOfGrownPool replicates a pool, plain and sealed, that grows
// between two runs of its mirror: the next mirror, in a new epoch, brings
// the replica to the grown size with a delta snapshot (the new part and
// the chunks that changed; a whole one for a sealed pool), with every
// commit from before and after the growth.
func TestReplicaOfGrownPool(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			g := newGrowingPrimary(t, sealed)
			h, key, dir, addr, push := g.h, g.key, g.dir, g.addr, g.push
			opts := secure(t, mirror.Options{Replicas: []string{addr}, Mode: mirror.Sync, Logger: testLogger(t)})
			m, err := mirror.Start(h, opts)
			require.NoError(t, err)
			push("before the growth")
			flush(t, m)
			require.NoError(t, m.Close())
			// The pool as it was before the growth, to come back later.
			old := filepath.Join(t.TempDir(), "old.pool")
			b, err := os.ReadFile(h.Path())
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(old, b, 0o600))

			require.NoError(t, h.Grow(2*poolSize))
			push("grown, not yet replicated")
			m, err = mirror.Start(h, opts)
			require.NoError(t, err)
			push("after the growth")
			flush(t, m)
			// A delta snapshot: the new part and the chunks of the copy
			// that changed. A sealed pool's snapshot is sealed under new
			// nonces, and always whole.
			if st := m.Status()[0]; sealed {
				assert.Equal(t, seal.FileSize(2*poolSize), st.SnapshotBytes)
			} else {
				assert.GreaterOrEqual(t, st.SnapshotBytes, int64(poolSize), "the new part")
				assert.Less(t, st.SnapshotBytes, int64(2*poolSize), "a whole snapshot")
			}
			epoch := m.Epoch()
			require.NoError(t, m.Close())

			// A primary that comes back with the pool as it was before
			// the growth (same pool, smaller) is refused: pools never
			// shrink.
			oh, err := heap.Open(old, &heap.Options{Key: key})
			require.NoError(t, err)
			defer oh.Close()
			oo := opts
			oo.Epoch, oo.Mode = epoch+1, mirror.Async
			om, err := mirror.Start(oh, oo)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			require.Error(t, om.Flush(ctx))
			require.NoError(t, om.Close())
			st := om.Status()
			require.Len(t, st, 1)
			require.ErrorContains(t, st[0].Err, "pools never shrink")

			path := replicaFile(t, dir)
			fi, err := os.Stat(path)
			require.NoError(t, err)
			size := int64(2 * poolSize)
			if sealed {
				size = seal.FileSize(size)
			}
			assert.Equal(t, size, fi.Size(), "the replica has the grown size")
			assert.Equal(t, g.want, names(t, path, key))
		})
	}
}

// TestReplicaRefusesGrowthPastCap: a primary whose pool grew past the
// server's MaxPoolSize is refused with ErrLimit, as a new pool that
// large is, and the replica keeps its copy of the smaller pool.
func TestReplicaRefusesGrowthPastCap(t *testing.T) {
	dir := fastDir(t)
	srv, addr := startServerWith(t, secureServer(t, mirror.ServerOptions{Dir: dir, MaxPoolSize: 2 * poolSize}))
	defer srv.Close()
	h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize})
	require.NoError(t, err)
	defer h.Close()
	opts := secure(t, mirror.Options{Replicas: []string{addr}, Mode: mirror.Async, Logger: testLogger(t)})
	m, err := mirror.Start(h, opts)
	require.NoError(t, err)
	require.NoError(t, pushName(h, "small"))
	flush(t, m)
	require.NoError(t, m.Close())
	before, err := os.ReadFile(replicaFile(t, dir))
	require.NoError(t, err)

	require.NoError(t, h.Grow(4*poolSize))
	m, err = mirror.Start(h, opts)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return errors.Is(m.Status()[0].Err, mirror.ErrLimit) }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, m.Close())
	after, err := os.ReadFile(replicaFile(t, dir))
	require.NoError(t, err)
	assert.Equal(t, before, after, "the replica's copy changed")
}

// TestGrownReplicaWithBase: a primary restarted with a Base (as a
// guardian saving a dead primary's pool starts one) whose pool grew
// while no mirror ran, to a replica that holds the base's epoch and batch
// but a smaller copy: the base describes chunks the replica does not
// have, so the replica gets a snapshot of the new size against its copy's
// chunk hashes rather than a listed one it would refuse.
func TestGrownReplicaWithBase(t *testing.T) {
	dir := fastDir(t)
	srv, addr := startServer(t, dir)
	defer srv.Close()
	h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize})
	require.NoError(t, err)
	defer h.Close()
	opts := secure(t, mirror.Options{Replicas: []string{addr}, Mode: mirror.Sync, Logger: testLogger(t)})
	m, err := mirror.Start(h, opts)
	require.NoError(t, err)
	require.NoError(t, pushName(h, "before"))
	flush(t, m)
	base := mirror.Base{Epoch: m.Epoch(), MinSeq: m.Acked()}
	require.NoError(t, m.Close())

	require.NoError(t, h.Grow(2*poolSize))
	require.NoError(t, pushName(h, "after"))
	base.Marks = make([]uint64, 2*poolSize/wire.HashChunk)
	for i := range base.Marks {
		base.Marks[i] = math.MaxUint64
	}
	opts.Base = &base
	m, err = mirror.Start(h, opts)
	require.NoError(t, err)
	flush(t, m)
	st := m.Status()[0]
	assert.False(t, st.Listed, "a listed snapshot to a smaller copy")
	assert.GreaterOrEqual(t, st.SnapshotBytes, int64(poolSize), "the new part")
	require.NoError(t, m.Close())
	assert.Equal(t, []string{"after", "before"}, names(t, replicaFile(t, dir), nil))
}

// TestGrowDuringSnapshot grows the pool while a new replica's snapshot is
// being sent (each write of the connection delayed): the replica ends
// with the grown pool and every commit, whether the snapshot was taken
// before the growth (then abandoned for one at the new size) or after.
func TestGrowDuringSnapshot(t *testing.T) {
	g := newGrowingPrimary(t, false)
	for i := range 20 {
		g.push(fmt.Sprintf("before %d", i))
	}
	var d net.Dialer
	var slow atomic.Bool
	slow.Store(true)
	m, err := mirror.Start(g.h, secure(t, mirror.Options{
		Replicas: []string{g.addr}, Mode: mirror.Async, Logger: testLogger(t),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return slowConn{c, 20 * time.Millisecond, &slow}, nil
		},
	}))
	require.NoError(t, err)
	defer m.Close()
	require.Eventually(t, func() bool { return m.Status()[0].State == "snapshot" }, 10*time.Second, time.Millisecond)
	require.NoError(t, g.h.Grow(2*poolSize))
	g.push("after the growth")
	flush(t, m)
	st := m.Status()[0]
	t.Logf("snapshots sent: %d", st.Snapshots)
	require.NoError(t, m.Close())
	fi, err := os.Stat(replicaFile(t, g.dir))
	require.NoError(t, err)
	assert.EqualValues(t, 2*poolSize, fi.Size())
	assert.Equal(t, g.want, names(t, replicaFile(t, g.dir), nil))
}
