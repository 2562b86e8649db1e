package mirror

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Replication runs over mutual TLS 1.3: the server requires a client
// certificate signed by a CA it trusts (ServerOptions.TLS.ClientCAs), and
// the primary checks the server's certificate against its CAs
// (Options.TLS.RootCAs) and the host of the address it dials, unless
// Options.TLS.ServerName names another. Plain TCP is used only when the
// caller sets Insecure.

// serverTLS returns the configuration a Server handshakes with: the
// caller's, with TLS 1.3 and verified client certificates required.
func serverTLS(c *tls.Config) (*tls.Config, error) {
	if len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil {
		return nil, errors.New("replica server: TLS configuration has no certificate")
	}
	if c.ClientCAs == nil && c.GetConfigForClient == nil {
		return nil, errors.New("replica server: TLS configuration has no ClientCAs to verify primaries' certificates with")
	}
	c = c.Clone()
	c.MinVersion = tls.VersionTLS13
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

// clientTLS returns the configuration a primary or a status query
// handshakes with: the caller's, with TLS 1.3 required. A client
// certificate is required too, since servers require one.
func clientTLS(c *tls.Config) (*tls.Config, error) {
	if len(c.Certificates) == 0 && c.GetClientCertificate == nil {
		return nil, errors.New("TLS configuration has no client certificate")
	}
	if c.InsecureSkipVerify && c.VerifyPeerCertificate == nil && c.VerifyConnection == nil {
		return nil, errors.New("TLS configuration skips verifying the server")
	}
	c = c.Clone()
	c.MinVersion = tls.VersionTLS13
	return c, nil
}

// secureDial makes o.Dial dial over TLS when o.TLS is set, and checks that
// plain TCP was asked for otherwise.
func (o *Options) secureDial() error {
	switch {
	case o.TLS != nil && o.Insecure:
		return errors.New("mirror: both TLS and Insecure set")
	case o.TLS == nil && !o.Insecure:
		return fmt.Errorf("mirror: no TLS configuration: %w", ErrInsecure)
	case o.TLS == nil:
		o.Logger.Warn("mirror: replicating over plain TCP without TLS: anyone on the network can read the pool and pose as a replica", "replicas", o.Replicas)
		return nil
	}
	cfg, err := clientTLS(o.TLS)
	if err != nil {
		return fmt.Errorf("mirror: %w", err)
	}
	o.Dial = tlsDial(o.Dial, cfg)
	return nil
}

// tlsDial returns a dial function that connects with dial and completes
// a TLS handshake before returning the connection.
func tlsDial(dial func(ctx context.Context, network, address string) (net.Conn, error), cfg *tls.Config) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		conn, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		c := cfg
		if c.ServerName == "" {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				conn.Close()
				return nil, err
			}
			c = cfg.Clone()
			c.ServerName = host
		}
		bw := &batchWriter{Conn: conn}
		tc := tls.Client(bw, c)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", address, err)
		}
		return &batchedTLS{Conn: tc, w: bw}, nil
	}
}

// dialStatus connects to a replica server for a status query.
func dialStatus(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
	var d net.Dialer
	if cfg == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	cfg, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}
	return tlsDial(d.DialContext, cfg)(ctx, "tcp", addr)
}

// checkSecurity checks the server's TLS options, and warns when it runs
// without TLS.
func (opts *ServerOptions) checkSecurity(log *slog.Logger) error {
	switch {
	case opts.TLS != nil && opts.Insecure:
		return errors.New("replica server: both TLS and Insecure set")
	case opts.TLS == nil && !opts.Insecure:
		return fmt.Errorf("replica server: no TLS configuration: %w", ErrInsecure)
	case opts.TLS == nil && !opts.Policy.isZero():
		return errors.New("replica server: a policy needs TLS: without it no peer has an identity")
	case opts.TLS == nil:
		log.Warn("replica server runs without TLS: any process that reaches it can replace its pools and read their status")
		return nil
	}
	var err error
	opts.TLS, err = serverTLS(opts.TLS)
	return err
}

// checkListener refuses to serve without TLS on every interface: plain
// TCP is for a loopback or otherwise private address the operator chose.
func (s *Server) checkListener(l net.Listener) error {
	if s.opts.TLS != nil {
		return nil
	}
	if a, ok := l.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		return fmt.Errorf("replica server: listening on every interface (%s) without TLS: %w", a, ErrInsecure)
	}
	return nil
}

// secure runs the TLS handshake of a connection accepted by a server with
// TLS, within the handshake timeout, and returns the connection to use and
// the peer's identity. Without TLS it returns c and no identity.
func (s *Server) secure(c net.Conn) (net.Conn, string, error) {
	if s.opts.TLS == nil {
		return c, "", nil
	}
	bc := &bufferedConn{Conn: c}
	tc := tls.Server(bc, s.opts.TLS)
	c.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Time{})
	bc.r = bufio.NewReaderSize(c, 64<<10)
	return tc, peerIdentity(tc.ConnectionState()), nil
}

// peerIdentity returns the identity of a verified peer: the common name of
// its certificate (pmemctl cert issue sets it to the node's name).
func peerIdentity(st tls.ConnectionState) string {
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// bufferedConn reads, once the handshake is done, through a buffer: the
// TLS layer asks for one record (16 KiB at most) at a time, and would
// otherwise make a system call for each one of a large batch. The buffer
// is not allocated before, so that connections that fail the handshake
// cost little memory.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r == nil {
		return c.Conn.Read(p)
	}
	return c.r.Read(p)
}
