// Package tlstesting gives tests the certificates of a small deployment,
// made once per test binary: a CA, a replica server's certificate for
// the loopback addresses, a primary's and a client's.
package tlstesting

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/internal/certs"
)

// Names of the default deployment's nodes: the identities their
// certificates carry.
const (
	ReplicaName = "replica-1"
	PrimaryName = "primary-1"
	ClientName  = "ops"
)

// Deployment is a CA and the node certificates it signed.
type Deployment struct {
	CA                       *certs.Pair
	Replica, Primary, Client *certs.Pair
}

var (
	once    sync.Once
	deflt   *Deployment
	deflErr error
)

// Default returns the deployment shared by the tests of the binary.
func Default(t testing.TB) *Deployment {
	t.Helper()
	once.Do(func() { deflt, deflErr = New() })
	if deflErr != nil {
		t.Fatal(deflErr)
	}
	return deflt
}

// New makes a deployment with a CA of its own.
func New() (*Deployment, error) {
	ca, err := certs.NewCA("pmemgo test CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	d := &Deployment{CA: ca}
	for _, n := range []struct {
		p   **certs.Pair
		req certs.Request
	}{
		{&d.Replica, certs.Request{Name: ReplicaName, Role: certs.RoleReplica, Hosts: []string{"127.0.0.1", "::1", "localhost"}}},
		{&d.Primary, certs.Request{Name: PrimaryName, Role: certs.RolePrimary}},
		{&d.Client, certs.Request{Name: ClientName, Role: certs.RoleClient}},
	} {
		if *n.p, err = ca.Issue(n.req); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Issue makes a node certificate signed by the deployment's CA.
func (d *Deployment) Issue(t testing.TB, req certs.Request) *certs.Pair {
	t.Helper()
	p, err := d.CA.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Pool returns a certificate pool holding the deployment's CA.
func (d *Deployment) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(d.CA.Cert)
	return pool
}

// ServerConfig returns a replica server's configuration presenting the
// replica certificate and trusting the CA.
func (d *Deployment) ServerConfig() *tls.Config { return d.ServerConfigFor(d.Replica) }

// ServerConfigFor returns a server configuration presenting p and
// trusting the CA.
func (d *Deployment) ServerConfigFor(p *certs.Pair) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{Cert(p)}, ClientCAs: d.Pool()}
}

// PrimaryConfig returns a primary's configuration.
func (d *Deployment) PrimaryConfig() *tls.Config { return d.ClientConfigFor(d.Primary) }

// ClientConfig returns the configuration of a client reading status.
func (d *Deployment) ClientConfig() *tls.Config { return d.ClientConfigFor(d.Client) }

// ClientConfigFor returns a client configuration presenting p and
// trusting the CA.
func (d *Deployment) ClientConfigFor(p *certs.Pair) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{Cert(p)}, RootCAs: d.Pool()}
}

// Cert returns p as a tls.Certificate.
func Cert(p *certs.Pair) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}
}

// Files are the paths of a node's PEM files, as pmemctl's --tls-ca,
// --tls-cert and --tls-key take them.
type Files struct{ CA, Cert, Key string }

// Args returns the pmemctl flags that name the files.
func (f Files) Args() []string {
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
}

// WriteFiles writes the CA's certificate and p's certificate and key
// under dir and returns their paths.
func (d *Deployment) WriteFiles(t testing.TB, dir string, p *certs.Pair) Files {
	t.Helper()
	if err := p.Save(dir); err != nil {
		t.Fatal(err)
	}
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, certs.CertFile), Key: filepath.Join(dir, certs.KeyFile)}
	if err := os.WriteFile(f.CA, d.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
