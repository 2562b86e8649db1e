package mirror_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// TestReplicate runs the workload against one replica in each mode, waits
// for the replica and compares it with the primary, on the default device
// and on one that buffers stores, whose commits write their ranges back
// after the commit record.
func TestReplicate(t *testing.T) {
	for _, mode := range []mirror.Mode{mirror.Sync, mirror.Async} {
		for _, buffered := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/buffered=%v", mode, buffered), func(t *testing.T) { replicateWorkload(t, mode, buffered) })
		}
	}
}

func replicateWorkload(t *testing.T, mode mirror.Mode, buffered bool) {
	dir := fastDir(t)
	srv, addr := startServer(t, dir)
	opts := &heap.Options{Size: poolSize}
	if buffered {
		opts.Device = device.Buffered{}
	}
	h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), opts)
	require.NoError(t, err)
	defer h.Close()
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Mode: mode, Logger: testLogger(t)}))
	require.NoError(t, err)
	const commits = 300
	for i := uint64(1); i <= commits; i++ {
		require.NoError(t, h.Update(func(tx *heap.Tx) error { return step(tx, i) }))
	}
	flush(t, m)
	st := m.Status()
	require.Len(t, st, 1)
	assert.Equal(t, "streaming", st[0].State)
	assert.Equal(t, m.Seq(), st[0].Acked)
	assert.Zero(t, st[0].LagBytes)
	require.NoError(t, m.Close())

	primary := append([]byte(nil), h.Device().Bytes()...)
	require.NoError(t, srv.Close())
	requireConverged(t, dir, primary, commits)
}

// TestSyncAcks checks how many acknowledgements a sync commit waits for:
// with two replicas up, both when Acks is 2; with one of two down, a
// commit needing two times out but stands, and one needing one does not
// wait.
func TestSyncAcks(t *testing.T) {
	dirA, dirB := fastDir(t), fastDir(t)
	_, addrA := startServer(t, dirA)
	srvB, addrB := startServer(t, dirB)
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	m, err := mirror.Start(h, secure(t, mirror.Options{
		Replicas: []string{addrA, addrB}, Acks: 2, AckTimeout: 300 * time.Millisecond, Logger: testLogger(t),
	}))
	require.NoError(t, err)
	// Both replicas are sent a snapshot when they connect, and its end asks
	// for a capture that a background commit may serve at any moment: the
	// batches before the commit are settled first, and the commit's own
	// batch is the first one after them.
	flush(t, m)
	before := m.Seq()
	require.NoError(t, commit(t, h, 1))
	for _, st := range m.Status() {
		assert.Greater(t, st.Acked, before, st.Addr)
	}
	require.NoError(t, srvB.Close())
	start := time.Now()
	err = commit(t, h, 2)
	assert.ErrorIs(t, err, mirror.ErrAckTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.NoError(t, m.Close())

	m, err = mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addrA, addrB}, Acks: 1, Logger: testLogger(t)}))
	require.NoError(t, err)
	defer m.Close()
	before = m.Seq()
	require.NoError(t, commit(t, h, 3), "one replica suffices")
	st := m.Status()
	assert.Greater(t, st[0].Acked, before)
	assert.Equal(t, "connecting", st[1].State)
	assert.Error(t, st[1].Err)
}

func TestOptions(t *testing.T) {
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	for _, opts := range []mirror.Options{
		{},
		{Replicas: []string{"127.0.0.1:1"}, Acks: 2},
	} {
		_, err := mirror.Start(h, opts)
		assert.Error(t, err)
	}
}

// TestMetrics checks that the mirror's and the server's metrics are
// registered and move.
func TestMetrics(t *testing.T) {
	dir := fastDir(t)
	sreg := prometheus.NewRegistry()
	srv, err := mirror.NewServer(secureServer(t, mirror.ServerOptions{Dir: dir, Metrics: sreg}))
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	defer srv.Close()
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	preg := prometheus.NewRegistry()
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{l.Addr().String()}, Metrics: preg}))
	require.NoError(t, err)
	for i := range uint64(5) {
		require.NoError(t, commit(t, h, i+1))
	}
	// The end of the snapshot asks for a capture that a background commit
	// serves; settle it so that the sequence numbers compared below stand.
	flush(t, m)
	values := func(reg *prometheus.Registry) map[string]float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		v := map[string]float64{}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				switch {
				case mt.Counter != nil:
					v[mf.GetName()] += mt.Counter.GetValue()
				case mt.Gauge != nil:
					v[mf.GetName()] += mt.Gauge.GetValue()
				case mt.Histogram != nil:
					v[mf.GetName()] += float64(mt.Histogram.GetSampleCount())
				}
			}
		}
		return v
	}
	pv := values(preg)
	assert.GreaterOrEqual(t, pv["pmemgo_mirror_batches_total"], 5.0)
	assert.Positive(t, pv["pmemgo_mirror_bytes_total"])
	assert.GreaterOrEqual(t, pv["pmemgo_mirror_ack_latency_seconds"], 5.0)
	assert.Equal(t, float64(m.Seq()), pv["pmemgo_mirror_acked_seq"])
	assert.Contains(t, pv, "pmemgo_mirror_lag_bytes")
	sv := values(sreg)
	assert.GreaterOrEqual(t, sv["pmemgo_replica_batches_total"], 4.0)
	assert.Equal(t, 1.0, sv["pmemgo_replica_snapshots_total"])
	assert.Equal(t, float64(m.Seq()), sv["pmemgo_replica_applied_seq"])
	require.NoError(t, m.Close())
	assert.Empty(t, values(preg), "Close unregisters the mirror's metrics")
}

// slowConn delays every write while slow is set, as a slow network or
// replica would.
type slowConn struct {
	net.Conn
	delay time.Duration
	slow  *atomic.Bool
}

func (c slowConn) Write(b []byte) (int, error) {
	if c.slow.Load() {
		time.Sleep(c.delay)
	}
	return c.Conn.Write(b)
}

// TestAsyncBackpressure replicates 256 KiB transactions to a replica behind
// a slow link: commits must wait so that, whenever one returns, the
// replica lags by no more than MaxLagBytes; and with a time bound, by no
// more than MaxLagTime.
func TestAsyncBackpressure(t *testing.T) {
	// Each write to the replica takes delay: far longer than a commit, even
	// on a loaded machine, so that the bounds are reached and commits must
	// wait. A lag in time is only reached if commits come faster than the
	// link acknowledges them, hence the longer delay of that case.
	for _, tc := range []struct {
		name     string
		maxBytes int64
		maxTime  time.Duration
		delay    time.Duration
		commits  int
	}{
		{"bytes", 2 << 20, time.Hour, 40 * time.Millisecond, 30},
		{"time", 1 << 40, 20 * time.Millisecond, 100 * time.Millisecond, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Plain TCP: under TLS the slow link would delay each 16 KiB
			// record, not each write the mirror makes.
			_, addr := startServerWith(t, mirror.ServerOptions{Dir: fastDir(t), Insecure: true})
			h, err := heap.Open(filepath.Join(fastDir(t), "p.pool"), &heap.Options{Size: 32 << 20, LogSize: 2 << 20})
			require.NoError(t, err)
			defer h.Close()
			fillChunks(t, h)
			var d net.Dialer
			var slow atomic.Bool // once the replica holds the pool
			m, err := mirror.Start(h, secure(t, mirror.Options{
				Replicas: []string{addr}, Mode: mirror.Async, MaxLagBytes: tc.maxBytes, MaxLagTime: tc.maxTime,
				Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
					c, err := d.DialContext(ctx, network, address)
					return slowConn{Conn: c, delay: tc.delay, slow: &slow}, err
				},
				Logger: testLogger(t), Insecure: true,
			}))
			require.NoError(t, err)
			defer m.Close()
			flush(t, m)
			slow.Store(true)
			var maxLag int64
			var maxAge time.Duration
			// Commits go on until the lag has come near its bound, which
			// the slow link makes certain on any machine: a batch waits at
			// least the link's delay for its acknowledgement, and a commit
			// returns well within it.
			reached := func() bool {
				if tc.name == "bytes" {
					return maxLag > tc.maxBytes/4
				}
				return maxAge > tc.maxTime/2
			}
			// Two writes' worth of time on the link, so that commits run
			// into the bound and wait, not only come near it.
			start := time.Now()
			for i := 0; i < tc.commits || time.Since(start) < 2*tc.delay || !reached() && time.Since(start) < 10*time.Second; i++ {
				// The bound holds when back-pressure lets the commit go,
				// somewhere inside Update: the lag may have grown since by
				// at most the time from the call on.
				called := time.Now()
				require.NoError(t, h.Update(writeChunk(i)))
				st := m.Status()[0]
				assert.LessOrEqual(t, st.LagBytes, tc.maxBytes, "commit %d", i)
				assert.LessOrEqual(t, st.LagTime, tc.maxTime+time.Since(called), "commit %d", i)
				maxLag, maxAge = max(maxLag, st.LagBytes), max(maxAge, st.LagTime)
			}
			t.Logf("largest lag seen after a commit: %d bytes, %v", maxLag, maxAge)
			assert.True(t, reached(), "the lag came near its bound: back-pressure was needed")
			flush(t, m)
		})
	}
}

// TestHeapCloseClosesMirror closes the heap under a running mirror, in
// both modes, while a replica is being sent its snapshot and commits go
// on: the mirror is closed first and its goroutines are done before the
// pool is unmapped (a read of the unmapped pool would crash the test).
func TestHeapCloseClosesMirror(t *testing.T) {
	for _, mode := range []mirror.Mode{mirror.Sync, mirror.Async} {
		t.Run(mode.String(), func(t *testing.T) {
			for i := range 5 {
				_, addr := startServer(t, fastDir(t))
				h := openPrimary(t, fastDir(t))
				m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Mode: mode, AckTimeout: time.Second, Logger: testLogger(t)}))
				require.NoError(t, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					for c := uint64(1); ; c++ {
						// Commits fail once the heap is closing or closed.
						if h.Update(func(tx *heap.Tx) error { return step(tx, c) }) != nil {
							return
						}
					}
				}()
				time.Sleep(time.Duration(i) * 5 * time.Millisecond)
				require.NoError(t, h.Close())
				<-done
				assert.ErrorIs(t, m.Close(), mirror.ErrClosed, "closing the heap closed the mirror")
			}
		})
	}
}
