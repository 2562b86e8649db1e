package ha_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// standbyRun is a standby running in the background.
type standbyRun struct {
	sb               *ha.Standby
	replica, handoff string
	done             chan struct{}
	p                ha.Promotion
	err              error
}

func runStandby(t testing.TB, coord ha.Coordinator, dir string, rec *recorder) *standbyRun {
	return runStandbyGrace(t, coord, dir, rec, 0)
}

// runStandbyGrace runs a standby that waits grace without a primary
// before it promotes without a handoff.
func runStandbyGrace(t testing.TB, coord ha.Coordinator, dir string, rec *recorder, grace time.Duration) *standbyRun {
	return runStandbyOpts(t, ha.StandbyOptions{Coordinator: coord, Logger: rec.logger(), Grace: grace, Server: mirror.ServerOptions{Dir: dir}})
}

// runStandbyOpts runs a standby of pool "orders" with opts, over the
// tests' TLS.
func runStandbyOpts(t testing.TB, opts ha.StandbyOptions) *standbyRun {
	t.Helper()
	opts.Pool, opts.Server.TLS = "orders", tlstesting.Default(t).ServerConfig()
	sb, err := ha.NewStandby(opts)
	require.NoError(t, err)
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &standbyRun{sb: sb, replica: rl.Addr().String(), handoff: hl.Addr().String(), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		r.p, r.err = sb.Run(ctx, rl, hl)
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// wait waits for the standby to promote.
func (r *standbyRun) wait(t testing.TB) ha.Promotion {
	t.Helper()
	require.NoError(t, r.attempt(t))
	return r.p
}

// attempt waits, 20 s at most, for the standby to try to promote, and
// returns what the attempt returned.
func (r *standbyRun) attempt(t testing.TB) error {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		t.Fatal("standby did not try to promote within 20s")
	}
	return r.err
}

func (r *standbyRun) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// startApp makes a fresh pool the primary, replicating to addr in mode,
// and commits n times.
func startApp(t *testing.T, coord ha.Coordinator, path, addr string, mode mirror.Mode, n int) (*heap.Heap, *ha.Primary) {
	t.Helper()
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	mo := syncMirror(t, addr, nil)
	mo.Mode = mode
	p, err := ha.StartPrimary(context.Background(), h, ha.PrimaryOptions{Coordinator: coord, Pool: "orders", Node: "a", Mirror: mo})
	require.NoError(t, err)
	for range n {
		_, err := increment(h)
		require.NoError(t, err)
	}
	return h, p
}

func newGuard(t testing.TB, coord ha.Coordinator, path string, sb *standbyRun, budget time.Duration, dial func(context.Context, string, string) (net.Conn, error)) *ha.Guard {
	g, err := ha.NewGuard(ha.GuardOptions{
		PoolPath: path, Pool: "orders", Node: "a", Coordinator: coord,
		Standby: sb.replica, Handoff: sb.handoff, TLS: tlstesting.Default(t).PrimaryConfig(),
		Budget: budget, Dial: dial, Logger: newRecorder(t).logger(),
	})
	require.NoError(t, err)
	return g
}

// TestGuardHandoff runs an application in async mode, stops it, and has
// the guardian save the pool to the standby: the standby refuses wrong
// handoffs and keeps serving, then promotes on the guardian's, and its
// pool is exactly the application's last commit.
func TestGuardHandoff(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
	path := filepath.Join(dir, "app.pool")
	h, p := startApp(t, coord, path, sb.replica, mirror.Async, 300)
	// The application dies: its lease is not renewed, its pool is left
	// as the last commit made it.
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())

	bad := []ha.Handoff{
		{Pool: "other"},
		{Pool: "orders", UUID: "00"},
	}
	for _, msg := range bad {
		err := ha.SendHandoff(context.Background(), sb.handoff, tlstesting.Default(t).PrimaryConfig(), msg)
		require.ErrorIs(t, err, ha.ErrHandoff)
		t.Logf("refused: %v", err)
	}
	assert.True(t, sb.running())
	assert.Len(t, rec.logged(0, "handoff refused"), len(bad))

	rep, err := newGuard(t, coord, path, sb, 5*time.Second, nil).Save(context.Background())
	require.NoError(t, err)
	t.Logf("save: open %v ship %v total %v, %d bytes", rep.Open, rep.Ship, rep.Total, rep.Handoff.Bytes)
	prom := sb.wait(t)
	assert.Equal(t, "handoff", prom.Reason)
	assert.Equal(t, uint64(300), counterOf(t, prom.Path))
	kept, err := ha.ReadPromotion(filepath.Join(dir, "standby"))
	require.NoError(t, err)
	assert.Equal(t, prom.Path, kept.Path)
	require.NotNil(t, kept.Handoff)
	assert.Equal(t, rep.Handoff.Bytes, kept.Handoff.Bytes)
}

// TestHandoffBadHash checks that a handoff whose hash is not the
// replica's is refused.
func TestHandoffBadHash(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	sb := runStandby(t, coord, filepath.Join(dir, "standby"), newRecorder(t))
	h, p := startApp(t, coord, filepath.Join(dir, "app.pool"), sb.replica, mirror.Sync, 5)
	defer h.Close()
	st := sb.sb.Server().Status()
	require.Len(t, st, 1)
	msg := ha.Handoff{Pool: "orders", UUID: st[0].Pool, Epoch: st[0].Epoch, Seq: st[0].Seq, Hash: 1}
	err := ha.SendHandoff(context.Background(), sb.handoff, tlstesting.Default(t).PrimaryConfig(), msg)
	require.ErrorIs(t, err, ha.ErrHandoff)
	assert.Contains(t, err.Error(), "pool hash")
	msg.Seq++
	err = ha.SendHandoff(context.Background(), sb.handoff, tlstesting.Default(t).PrimaryConfig(), msg)
	require.ErrorIs(t, err, ha.ErrHandoff)
	assert.Contains(t, err.Error(), "the replica holds batch")
	assert.True(t, sb.running())
	require.NoError(t, p.Close(context.Background()))
}

// slowConn delays every write, as a slow link would, until it is closed.
type slowConn struct {
	net.Conn
	delay  time.Duration
	closed chan struct{}
	once   *sync.Once
}

func (c slowConn) Write(b []byte) (int, error) {
	select {
	case <-time.After(c.delay):
	case <-c.closed:
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c slowConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestBudgetExceeded runs an application whose replication never reached
// the standby after its first commits, then saves over a slow link with a
// short budget: the save overruns, and the standby promotes from its last
// complete state, never from a partial save, and says so.
func TestBudgetExceeded(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
	path := filepath.Join(dir, "app.pool")
	h, p := startApp(t, coord, path, sb.replica, mirror.Sync, 10)
	// The link to the standby breaks: the application goes on alone.
	require.NoError(t, p.Mirror().Close())
	for range 50 {
		_, err := increment(h)
		require.NoError(t, err)
	}
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())

	slow := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return slowConn{c, 300 * time.Millisecond, make(chan struct{}), &sync.Once{}}, nil
	}
	_, err := newGuard(t, coord, path, sb, 800*time.Millisecond, slow).Save(context.Background())
	require.Error(t, err)
	t.Logf("save: %v", err)
	prom := sb.wait(t)
	assert.Contains(t, prom.Reason, "save aborted")
	assert.Contains(t, prom.Reason, "last complete state")
	assert.NotEmpty(t, rec.logged(0, "promotes from its last complete state"))
	assert.Equal(t, uint64(10), counterOf(t, prom.Path))
}

// TestStandbyRefusesInvalidPool damages the standby's replica before the
// primary's lease ends without a handoff: the standby promotes from its
// last complete state, finds that it fails validation, and returns an
// error instead of a pool for the application.
func TestStandbyRefusesInvalidPool(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
	h, p := startApp(t, coord, filepath.Join(dir, "app.pool"), sb.replica, mirror.Sync, 5)
	require.NoError(t, p.Mirror().Close())
	st := sb.sb.Server().Status()
	require.Len(t, st, 1)
	f, err := os.OpenFile(st[0].Path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{0xa5}, 64<<10), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// The application dies without a guardian.
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())

	err = sb.attempt(t)
	require.Error(t, err)
	t.Logf("promotion: %v", err)
	assert.NotEmpty(t, rec.logged(slog.LevelError, "fails validation"))
}
