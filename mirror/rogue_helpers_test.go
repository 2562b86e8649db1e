package mirror_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// logBuffer collects a server's log, to check what it reported.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   testing.TB
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// served is a replica server under test, with its log and the error its
// Serve returned, if it did.
type served struct {
	*mirror.Server
	addr   string
	log    *logBuffer
	served chan error
}

// serve runs a replica server with opts on a loopback port until the test
// ends.
func serve(t testing.TB, opts mirror.ServerOptions) *served {
	t.Helper()
	lb := &logBuffer{t: t}
	opts.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := mirror.NewServer(secureServer(t, opts))
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &served{Server: srv, addr: l.Addr().String(), log: lb, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// stillServing fails the test if Serve returned.
func (s *served) stillServing(t testing.TB) {
	t.Helper()
	select {
	case err := <-s.served:
		t.Fatalf("the server stopped serving: %v", err)
	default:
	}
}

// rogue is a client of a replica server that follows no rule.
type rogue struct {
	t    testing.TB
	conn net.Conn
	r    *wire.Reader
}

// dialRogue connects with the primary's certificate: the rogue is
// authenticated, and must still be refused whatever it sends that a
// legitimate primary never would.
func dialRogue(t testing.TB, addr string) *rogue {
	t.Helper()
	return dialRogueAs(t, addr, tlstesting.Default(t).PrimaryConfig())
}

// dialRogueAs connects over TLS with cfg's certificate.
func dialRogueAs(t testing.TB, addr string, cfg *tls.Config) *rogue {
	t.Helper()
	conn := dialAs(t, addr, cfg)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &rogue{t: t, conn: conn, r: wire.NewReader(conn)}
}

// dialRoguePlain connects over plain TCP, to a server with Insecure.
func dialRoguePlain(t testing.TB, addr string) *rogue {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &rogue{t: t, conn: conn, r: wire.NewReader(conn)}
}

func (r *rogue) send(frames ...[]byte) {
	r.t.Helper()
	for _, f := range frames {
		_, err := r.conn.Write(f)
		require.NoError(r.t, err)
	}
}

func (r *rogue) next() wire.Frame {
	r.t.Helper()
	f, err := r.r.Next()
	require.NoError(r.t, err)
	return f
}

// refused reads the server's next message, which must be an error of the
// given code, and returns its message.
func (r *rogue) refused(code uint16) string {
	r.t.Helper()
	f := r.next()
	require.Equal(r.t, wire.TypeError, f.Type, "the server answers with an error")
	e, err := wire.DecodeError(f.Payload)
	require.NoError(r.t, err)
	require.Equal(r.t, code, e.Code, e.Message)
	return e.Message
}

// hello says hello for a pool.
func (r *rogue) hello(uuid [16]byte, epoch, size uint64) {
	r.t.Helper()
	r.send(wire.AppendFrame(nil, wire.TypeHello, epoch, 0, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: size})))
}

// rogueHello dials and says hello; the server's answer is read by the
// caller.
func rogueHello(t testing.TB, addr string, uuid [16]byte, epoch, size uint64) *rogue {
	t.Helper()
	r := dialRogue(t, addr)
	r.hello(uuid, epoch, size)
	return r
}

// replicate starts a mirror of h to addr, makes commits from+1 to to, and
// waits until the replica acknowledged them. The mirror is returned open.
func replicate(t testing.TB, h *heap.Heap, addr string, from, to uint64, opts mirror.Options) *mirror.Mirror {
	t.Helper()
	opts.Replicas = []string{addr}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	m, err := mirror.Start(h, secure(t, opts))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	for i := from + 1; i <= to; i++ {
		require.NoError(t, h.Update(func(tx *heap.Tx) error { return step(tx, i) }))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, m.Flush(ctx))
	return m
}

// waitIdle waits until no session uses the server's pool uuid and
// returns its status.
func waitIdle(t testing.TB, srv *mirror.Server, pool [16]byte) mirror.PoolStatus {
	t.Helper()
	name := hexUUID(pool)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		for _, st := range srv.Status() {
			if st.Pool == name && st.State != "handshake" && st.State != "connected" && st.State != "snapshot" && st.State != "streaming" {
				return st
			}
		}
	}
	t.Fatalf("pool %s did not become idle", name)
	return mirror.PoolStatus{}
}

func poolStatus(t testing.TB, srv *mirror.Server, pool [16]byte) mirror.PoolStatus {
	t.Helper()
	for _, st := range srv.Status() {
		if st.Pool == hexUUID(pool) {
			return st
		}
	}
	t.Fatalf("no pool %s", hexUUID(pool))
	return mirror.PoolStatus{}
}

func hexUUID(u [16]byte) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, c := range u {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

// openFDs returns the number of descriptors the process has open.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}
