package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// makeCerts makes, with 'cert ca' and 'cert issue', a CA and the
// certificates of a replica (replica-1, for 127.0.0.1), a primary (app-1),
// a second primary (app-2) and a client (ops), and returns their files by
// name.
func makeCerts(t *testing.T) map[string]tlstesting.Files {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	_, _, code := pmemctl(t, "cert", "ca", "--out", ca)
	require.Equal(t, exitOK, code)
	nodes := map[string]tlstesting.Files{}
	for _, n := range []struct{ name, role, host string }{
		{"replica-1", "replica", "127.0.0.1"},
		{"app-1", "primary", ""},
		{"app-2", "primary", ""},
		{"ops", "client", ""},
	} {
		out := filepath.Join(dir, n.name)
		args := []string{"cert", "issue", "--ca", ca, "--name", n.name, "--role", n.role, "--out", out}
		if n.host != "" {
			args = append(args, "--host", n.host)
		}
		stdout, _, code := pmemctl(t, args...)
		require.Equal(t, exitOK, code)
		assert.Contains(t, stdout, n.name)
		nodes[n.name] = tlstesting.Files{CA: filepath.Join(out, "ca.pem"), Cert: filepath.Join(out, certs.CertFile), Key: filepath.Join(out, certs.KeyFile)}
	}
	return nodes
}

// loadTLS loads a primary's configuration from its files.
func loadTLS(t *testing.T, f tlstesting.Files) *tls.Config {
	t.Helper()
	cfg, err := certs.LoadTLS(f.CA, f.Cert, f.Key, false)
	require.NoError(t, err)
	return cfg
}

func TestCertFiles(t *testing.T) {
	nodes := makeCerts(t)
	for name, f := range nodes {
		st, err := os.Stat(f.Key)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s key", name)
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		require.NoError(t, err)
		assert.Equal(t, name, cert.Leaf.Subject.CommonName)
	}
	ca := filepath.Join(filepath.Dir(filepath.Dir(nodes["ops"].Key)), "ca")
	st, err := os.Stat(filepath.Join(ca, certs.KeyFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "CA key")

	_, stderr, code := pmemctl(t, "cert", "issue", "--ca", ca, "--name", "ops", "--role", "client", "--out", filepath.Dir(nodes["ops"].Key))
	assert.Equal(t, exitIO, code, "a key is never overwritten")
	assert.Contains(t, stderr, "exists")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ca without out", []string{"cert", "ca"}, "--out is required"},
		{"issue without name", []string{"cert", "issue", "--ca", ca, "--role", "client", "--out", "x"}, "are required"},
		{"unknown role", []string{"cert", "issue", "--ca", ca, "--name", "n", "--role", "admin", "--out", t.TempDir()}, "want primary, replica or client"},
		{"replica without host", []string{"cert", "issue", "--ca", ca, "--name", "r", "--role", "replica", "--out", t.TempDir()}, "no host"},
		{"bad days", []string{"cert", "ca", "--out", t.TempDir(), "--days", "0"}, "positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := pmemctl(t, tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// TestReplicaServePolicy runs 'replica serve' with --allow-primary and
// --allow-status: a primary or client without the right is refused and
// told why, and the server goes on serving the allowed ones.
func TestReplicaServePolicy(t *testing.T) {
	nodes := makeCerts(t)
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	uuid := h.UUID()
	srv := startServe(t, t.TempDir(), append(nodes["replica-1"].Args(),
		"--allow-primary", "app-1="+hexUUID(uuid), "--allow-primary", "app-2=00000000-0000-0000-0000-000000000001",
		"--allow-status", "ops")...)

	// app-2 may replicate another pool only.
	h2, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h2.Close()
	refused, err := mirror.Start(h2, mirror.Options{Replicas: []string{srv.addr}, TLS: loadTLS(t, nodes["app-2"]), RetryInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	defer refused.Close()
	require.Eventually(t, func() bool { return errors.Is(refused.Status()[0].Err, mirror.ErrUnauthorized) }, 10*time.Second, 10*time.Millisecond)

	m, err := mirror.Start(h, mirror.Options{Replicas: []string{srv.addr}, TLS: loadTLS(t, nodes["app-1"])})
	require.NoError(t, err)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.Flush(ctx))

	_, stderr, code := pmemctl(t, append([]string{"replica", "status", "--addr", srv.addr}, nodes["app-1"].Args()...)...)
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, `identity "app-1" may not read status`)
	out, _, code := pmemctl(t, append([]string{"replica", "status", "--addr", srv.addr}, nodes["ops"].Args()...)...)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, hexUUID(uuid))
	assert.Contains(t, out, "streaming")

	_, _, code = pmemctl(t, "replica", "status", "--addr", srv.addr, "--insecure")
	assert.Equal(t, exitIO, code, "plain TCP to a TLS server")
	other := makeCerts(t)["ops"]
	_, stderr, code = pmemctl(t, append([]string{"replica", "status", "--addr", srv.addr}, other.Args()...)...)
	assert.Equal(t, exitIO, code, "a client of another CA")
	assert.Contains(t, stderr, "certificate")

	require.NoError(t, m.Close())
	srv.stop(t)
	assert.Contains(t, srv.errOut.String(), "may not replicate pool")
}

// TestReplicaServeInsecure runs 'replica serve --insecure' on loopback:
// it warns, and replicates and reports over plain TCP.
func TestReplicaServeInsecure(t *testing.T) {
	srv := startServe(t, t.TempDir(), "--insecure")
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{srv.addr}, Insecure: true})
	require.NoError(t, err)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.Flush(ctx))
	out, stderr, code := pmemctl(t, "replica", "status", "--addr", srv.addr, "--insecure")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "streaming")
	assert.Contains(t, stderr, "warning: --insecure")
	require.NoError(t, m.Close())
	srv.stop(t)
	assert.Contains(t, srv.errOut.String(), "without TLS")
}

func hexUUID(u [16]byte) string { return hex.EncodeToString(u[:]) }
