package certs_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/certs"
)

func TestIssueVerifies(t *testing.T) {
	ca, err := certs.NewCA("test CA", time.Hour)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, tc := range []struct {
		role       certs.Role
		hosts      []string
		server     bool
		uri, check string
	}{
		{certs.RoleReplica, []string{"127.0.0.1", "db.example"}, true, "pmemgo://replica/n", "db.example"},
		{certs.RolePrimary, nil, false, "pmemgo://primary/n", ""},
		{certs.RoleClient, nil, false, "pmemgo://client/n", ""},
	} {
		t.Run(string(tc.role), func(t *testing.T) {
			p, err := ca.Issue(certs.Request{Name: "n", Role: tc.role, Hosts: tc.hosts})
			require.NoError(t, err)
			assert.Equal(t, "n", p.Cert.Subject.CommonName)
			require.Len(t, p.Cert.URIs, 1)
			assert.Equal(t, tc.uri, p.Cert.URIs[0].String())
			_, err = p.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			assert.NoError(t, err, "client auth")
			_, err = p.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.check, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			assert.Equal(t, tc.server, err == nil, "server auth: %v", err)
		})
	}
}

func TestIssueInvalid(t *testing.T) {
	ca, err := certs.NewCA("test CA", time.Hour)
	require.NoError(t, err)
	for _, req := range []certs.Request{
		{Role: certs.RolePrimary},
		{Name: "a/b", Role: certs.RolePrimary},
		{Name: "n", Role: "admin"},
		{Name: "n", Role: certs.RoleReplica},
		{Name: "n", Role: certs.RoleReplica, Hosts: []string{"a b"}},
	} {
		_, err := ca.Issue(req)
		assert.ErrorIs(t, err, certs.ErrInvalid, "%+v", req)
	}
}

func TestSaveLoad(t *testing.T) {
	ca, err := certs.NewCA("test CA", time.Hour)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "ca")
	require.NoError(t, ca.Save(dir))
	st, err := os.Stat(filepath.Join(dir, certs.KeyFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Error(t, ca.Save(dir), "a key is never overwritten")
	got, err := certs.Load(dir)
	require.NoError(t, err)
	assert.True(t, got.Cert.Equal(ca.Cert))

	other, err := certs.NewCA("other", time.Hour)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, certs.CertFile), other.CertPEM(), 0o644))
	_, err = certs.Load(dir)
	assert.ErrorIs(t, err, certs.ErrInvalid, "key of another certificate")
}
