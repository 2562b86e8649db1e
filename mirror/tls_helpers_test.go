package mirror_test

import (
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// The tests run over mutual TLS unless they ask for plain TCP: primaries
// present the default deployment's primary certificate, servers its
// replica certificate for the loopback addresses.

// secure returns o with the primary's TLS configuration, unless the test
// set TLS or Insecure itself.
func secure(t testing.TB, o mirror.Options) mirror.Options {
	t.Helper()
	if o.TLS == nil && !o.Insecure {
		o.TLS = tlstesting.Default(t).PrimaryConfig()
	}
	return o
}

// secureServer returns o with the replica server's TLS configuration,
// unless the test set TLS or Insecure itself.
func secureServer(t testing.TB, o mirror.ServerOptions) mirror.ServerOptions {
	t.Helper()
	if o.TLS == nil && !o.Insecure {
		o.TLS = tlstesting.Default(t).ServerConfig()
	}
	return o
}

// dialServer connects to a replica server over TLS with the primary's
// certificate, for a test that speaks the protocol itself.
func dialServer(t testing.TB, addr string) net.Conn {
	t.Helper()
	return dialAs(t, addr, tlstesting.Default(t).PrimaryConfig())
}

// dialAs connects to a replica server over TLS with cfg and completes
// the handshake.
func dialAs(t testing.TB, addr string, cfg *tls.Config) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// Child processes get the files of their certificate in these variables.
const (
	envCA   = "TLS_CA"
	envCert = "TLS_CERT"
	envKey  = "TLS_KEY"
)

// childTLSEnv writes the CA and p's certificate and key for a child
// process and returns the environment that names them.
func childTLSEnv(t testing.TB, p *certs.Pair) []string {
	t.Helper()
	f := tlstesting.Default(t).WriteFiles(t, t.TempDir(), p)
	return []string{envCA + "=" + f.CA, envCert + "=" + f.Cert, envKey + "=" + f.Key}
}

// childTLS loads the configuration a child was given by childTLSEnv.
func childTLS(server bool) (*tls.Config, error) {
	return certs.LoadTLS(os.Getenv(envCA), os.Getenv(envCert), os.Getenv(envKey), server)
}

// startServerWith runs a replica server with opts on a loopback port. It
// is closed when the test ends, if the test did not close it.
func startServerWith(t testing.TB, opts mirror.ServerOptions) (*mirror.Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := mirror.NewServer(opts)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv, l.Addr().String()
}
