package mirror_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// syncBuffer is a buffer a logger writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// refused asks the server at addr, as the client of cfg, for what first
// (a hello or a status request) asks, and checks that it is refused: in
// the TLS handshake when code is zero, else by an error frame of code.
func refused(t *testing.T, addr string, cfg *tls.Config, first []byte, code uint16) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		assert.Zero(t, code, "handshake failed: %v", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// In TLS 1.3 the client's handshake ends before the server has checked
	// its certificate: a refusal then comes as an alert on the first read.
	_, err = c.Write(first)
	require.NoError(t, err)
	r := wire.NewReader(c)
	f, err := r.Next()
	if code == 0 {
		require.Error(t, err, "the server answered %s", f.Type)
		assert.Contains(t, err.Error(), "remote error: tls:")
		return
	}
	require.NoError(t, err)
	require.Equal(t, wire.TypeError, f.Type, "the server answered %s", f.Type)
	e, err := wire.DecodeError(f.Payload)
	require.NoError(t, err)
	assert.Equal(t, code, e.Code, e.Message)
	_, err = r.Next()
	assert.Error(t, err, "the server closed the connection")
}

func helloFrame(uuid [16]byte, epoch uint64) []byte {
	return wire.AppendFrame(nil, wire.TypeHello, epoch, 0, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: poolSize}))
}

var statusFrame = wire.AppendFrame(nil, wire.TypeStatusRequest, 0, 0, nil)

// TestTLSRefusesPeers runs a server that lets the default primary
// replicate its pool only, and the default client read the status, while
// that primary streams. Peers without a certificate, with one from another
// CA, with an expired one, or with an identity without the right are
// refused, for a hello and for a status request; the server goes on
// serving the primary, and holds no pool of theirs.
func TestTLSRefusesPeers(t *testing.T) {
	d := tlstesting.Default(t)
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	var logs syncBuffer
	srv, addr := startServerWith(t, mirror.ServerOptions{
		Dir: fastDir(t), TLS: d.ServerConfig(), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Policy: mirror.Policy{
			Primaries: map[string][][16]byte{tlstesting.PrimaryName: {h.UUID()}},
			Status:    []string{tlstesting.ClientName},
		},
	})
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t)}))
	require.NoError(t, err)
	defer m.Close()
	i := uint64(1)
	require.NoError(t, commit(t, h, i))

	other, err := tlstesting.New()
	require.NoError(t, err)
	expired := d.Issue(t, certs.Request{Name: tlstesting.PrimaryName, Role: certs.RolePrimary,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	intruder := d.Issue(t, certs.Request{Name: "intruder", Role: certs.RolePrimary})
	noCert := &tls.Config{RootCAs: d.Pool()}
	rogueUUID := [16]byte{0xee, 1, 2, 3}
	const unauthorized = wire.CodeUnauthorized
	for _, tc := range []struct {
		name  string
		cfg   *tls.Config
		first []byte
		code  uint16
	}{
		{"no certificate/hello", noCert, helloFrame(rogueUUID, 1), 0},
		{"no certificate/status", noCert, statusFrame, 0},
		{"other CA/hello", other.ClientConfigFor(other.Primary), helloFrame(h.UUID(), m.Epoch()+1), 0},
		{"other CA/status", other.ClientConfigFor(other.Client), statusFrame, 0},
		{"expired/hello", d.ClientConfigFor(expired), helloFrame(h.UUID(), m.Epoch()+1), 0},
		{"expired/status", d.ClientConfigFor(expired), statusFrame, 0},
		{"identity not allowed/hello", d.ClientConfigFor(intruder), helloFrame(h.UUID(), m.Epoch()+1), unauthorized},
		{"identity not allowed/status", d.ClientConfigFor(intruder), statusFrame, unauthorized},
		{"primary of another pool/hello", d.PrimaryConfig(), helloFrame(rogueUUID, 1), unauthorized},
		{"primary/status", d.PrimaryConfig(), statusFrame, unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, addr, tc.cfg, tc.first, tc.code)
			i++
			require.NoError(t, commit(t, h, i), "the primary goes on")
			st := srv.Status()
			require.Len(t, st, 1, "no pool of the refused peer")
			assert.Equal(t, "streaming", st[0].State)
			assert.Equal(t, m.Epoch(), st[0].SeenEpoch, "the refused hello's epoch was not seen")
		})
	}
	flush(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := mirror.QueryStatus(ctx, addr, d.ClientConfig())
	require.NoError(t, err, "the allowed client reads the status")
	require.Len(t, st, 1)
	assert.Equal(t, m.Seq(), st[0].Seq)
	_, err = mirror.QueryStatus(ctx, addr, d.PrimaryConfig())
	assert.ErrorIs(t, err, mirror.ErrUnauthorized)
	assert.Contains(t, logs.String(), "may not replicate pool")
	assert.Contains(t, logs.String(), `identity \"intruder\"`)
	assert.Contains(t, logs.String(), "TLS handshake failed")
}

// TestTLSPrimaryRefusesRogue points a primary at listeners that are not
// the replica it expects: a certificate from another CA, one of the right
// CA for another host, one of the right CA and host without the server
// role. The primary refuses each during the handshake: the rogue gets
// nothing but the handshake, no frame, no pool byte.
func TestTLSPrimaryRefusesRogue(t *testing.T) {
	d := tlstesting.Default(t)
	other, err := tlstesting.New()
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		cert *certs.Pair
	}{
		{"other CA", other.Replica},
		{"other host", d.Issue(t, certs.Request{Name: "replica-2", Role: certs.RoleReplica, Hosts: []string{"192.0.2.1", "replica-2.invalid"}})},
		{"not a server", d.Issue(t, certs.Request{Name: tlstesting.ReplicaName, Role: certs.RolePrimary, Hosts: []string{"127.0.0.1"}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rogue := startRogue(t, tc.cert)
			h := openPrimary(t, fastDir(t))
			defer h.Close()
			marker := []byte("pool-marker-b8f3")
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				b, err := heap.MakeSlice[byte](tx, len(marker), len(marker))
				copy(b, marker)
				return err
			}))
			m, err := mirror.Start(h, secure(t, mirror.Options{
				Replicas: []string{rogue.addr}, Mode: mirror.Async, RetryInterval: 10 * time.Millisecond, Logger: testLogger(t),
			}))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return rogue.conns.Load() >= 2 }, 10*time.Second, 5*time.Millisecond)
			st := m.Status()[0]
			require.NoError(t, m.Close())
			rogue.close()
			assert.NotEqual(t, "streaming", st.State)
			var cerr *tls.CertificateVerificationError
			assert.ErrorAs(t, st.Err, &cerr, "the primary reports the certificate: %v", st.Err)
			assert.Zero(t, rogue.appBytes.Load(), "application bytes the rogue received")
			assert.Less(t, rogue.rawBytes.Load(), int64(2048*rogue.conns.Load()), "only handshakes reached the rogue")
			assert.NotContains(t, rogue.raw.String(), string(marker))
		})
	}
}

// rogueListener is a TLS listener that accepts any client certificate and
// counts what it receives.
type rogueListener struct {
	addr               string
	l                  net.Listener
	conns              atomic.Int64
	rawBytes, appBytes atomic.Int64
	raw                syncBuffer
	wg                 sync.WaitGroup
}

func startRogue(t *testing.T, cert *certs.Pair) *rogueListener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &rogueListener{addr: l.Addr().String(), l: l}
	cfg := &tls.Config{Certificates: []tls.Certificate{tlstesting.Cert(cert)}, ClientAuth: tls.RequireAnyClientCert}
	r.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			r.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(countingConn{Conn: c, r: r}, cfg)
				n, _ := io.Copy(io.Discard, tc)
				r.appBytes.Add(n)
			})
		}
	})
	t.Cleanup(r.close)
	return r
}

func (r *rogueListener) close() {
	r.l.Close()
	r.wg.Wait()
}

type countingConn struct {
	net.Conn
	r *rogueListener
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.r.rawBytes.Add(int64(n))
	c.r.raw.Write(p[:n])
	return n, err
}

// TestTLSPlainRefused checks that plain TCP does not reach a server with
// TLS, nor a TLS primary a plain server: neither side replicates.
func TestTLSPlainRefused(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		plainServer, plainPrimary bool
	}{
		{"plain primary", false, true},
		{"plain server", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startServerWith(t, secureServer(t, mirror.ServerOptions{Dir: fastDir(t), Insecure: tc.plainServer}))
			h := openPrimary(t, fastDir(t))
			defer h.Close()
			m, err := mirror.Start(h, secure(t, mirror.Options{
				Replicas: []string{addr}, Mode: mirror.Async, Insecure: tc.plainPrimary,
				RetryInterval: 10 * time.Millisecond, Timeout: 2 * time.Second, Logger: testLogger(t),
			}))
			require.NoError(t, err)
			defer m.Close()
			require.Eventually(t, func() bool { return m.Status()[0].Err != nil }, 10*time.Second, 5*time.Millisecond)
			assert.NotEqual(t, "streaming", m.Status()[0].State)
			assert.Empty(t, srv.Status(), "the server holds no pool")
		})
	}
}

// TestSecurityOptions checks that plain TCP needs an explicit Insecure,
// that an insecure server refuses every interface, and that TLS and
// policy configurations that cannot work are refused.
func TestSecurityOptions(t *testing.T) {
	d := tlstesting.Default(t)
	_, err := mirror.NewServer(mirror.ServerOptions{Dir: fastDir(t)})
	assert.ErrorIs(t, err, mirror.ErrInsecure)
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	_, err = mirror.Start(h, mirror.Options{Replicas: []string{"127.0.0.1:1"}})
	assert.ErrorIs(t, err, mirror.ErrInsecure)

	for _, tc := range []struct {
		name string
		opts mirror.ServerOptions
	}{
		{"TLS and insecure", mirror.ServerOptions{TLS: d.ServerConfig(), Insecure: true}},
		{"policy without TLS", mirror.ServerOptions{Insecure: true, Policy: mirror.Policy{Status: []string{"ops"}}}},
		{"no client CA", mirror.ServerOptions{TLS: &tls.Config{Certificates: d.ServerConfig().Certificates}}},
		{"no certificate", mirror.ServerOptions{TLS: &tls.Config{ClientCAs: d.Pool()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Dir = fastDir(t)
			_, err := mirror.NewServer(tc.opts)
			assert.Error(t, err)
		})
	}
	for _, tc := range []struct {
		name string
		opts mirror.Options
	}{
		{"TLS and insecure", mirror.Options{TLS: d.PrimaryConfig(), Insecure: true}},
		{"no client certificate", mirror.Options{TLS: &tls.Config{RootCAs: d.Pool()}}},
		{"no verification", mirror.Options{TLS: &tls.Config{Certificates: d.PrimaryConfig().Certificates, InsecureSkipVerify: true}}},
	} {
		t.Run("primary/"+tc.name, func(t *testing.T) {
			tc.opts.Replicas = []string{"127.0.0.1:1"}
			_, err := mirror.Start(h, tc.opts)
			assert.Error(t, err)
		})
	}

	srv, err := mirror.NewServer(mirror.ServerOptions{Dir: fastDir(t), Insecure: true})
	require.NoError(t, err)
	defer srv.Close()
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // no IPv6
		}
		err = srv.Serve(l)
		assert.ErrorIs(t, err, mirror.ErrInsecure, addr)
		_, err = l.Accept()
		assert.ErrorIs(t, err, net.ErrClosed, "the listener is closed")
	}
}

// TestTLSHandshakeTimeout checks that a peer that connects and says
// nothing is dropped after HandshakeTimeout, and that one that sends a
// plain hello to a server with TLS gets no answer but a TLS alert.
func TestTLSHandshakeTimeout(t *testing.T) {
	srv, addr := startServerWith(t, secureServer(t, mirror.ServerOptions{Dir: fastDir(t), HandshakeTimeout: 100 * time.Millisecond}))
	silent, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer silent.Close()
	silent.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = silent.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the server closed the silent connection")

	plain, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = plain.Write(helloFrame([16]byte{1}, 1))
	require.NoError(t, err)
	_, err = wire.NewReader(plain).Next()
	assert.Error(t, err, "no frame in answer to plain TCP")
	assert.Empty(t, srv.Status())
}
