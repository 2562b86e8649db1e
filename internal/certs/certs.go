// Package certs makes the certificates of a small pmemgo deployment: a
// certificate authority and, signed by it, one certificate per node, with
// the key usages of its role. It uses crypto/x509 and ECDSA P-256 keys;
// pmemctl cert and the tests' certificates are made here.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Role is what a node certificate is for. It decides the certificate's
// extended key usages: a replica server presents its certificate to
// primaries (server auth) and may dial others (client auth); a primary
// and a client (pmemctl) only dial.
type Role string

const (
	// RolePrimary is a primary that replicates its pools.
	RolePrimary Role = "primary"
	// RoleReplica is a replica server.
	RoleReplica Role = "replica"
	// RoleClient is a tool, such as pmemctl, that asks a server for status.
	RoleClient Role = "client"
)

// File names in a directory written by Save.
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// ErrInvalid is returned for a request that cannot make a valid
// certificate: no name, an unknown role, a bad host.
var ErrInvalid = errors.New("certs: invalid request")

// Pair is a certificate with its private key.
type Pair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed certificate authority named name, valid from
// now for validity.
func NewCA(name string, validity time.Duration) (*Pair, error) {
	if name == "" {
		return nil, fmt.Errorf("CA name is empty: %w", ErrInvalid)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, nil)
}

// Request describes a node certificate.
type Request struct {
	// Name is the node's identity: the certificate's common name, and a
	// URI SAN pmemgo://ROLE/NAME.
	Name string
	Role Role
	// Hosts are the DNS names and IP addresses a replica server is
	// reached at; a primary checks the address it dials against them.
	Hosts []string
	// NotBefore and NotAfter bound the validity; zero NotBefore means a
	// minute ago (clock skew), zero NotAfter a year after NotBefore.
	NotBefore, NotAfter time.Time
}

// Issue makes a node certificate signed by ca.
func (ca *Pair) Issue(req Request) (*Pair, error) {
	if req.Name == "" || strings.ContainsAny(req.Name, "/?#") {
		return nil, fmt.Errorf("node name %q: %w", req.Name, ErrInvalid)
	}
	var eku []x509.ExtKeyUsage
	switch req.Role {
	case RoleReplica:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		if len(req.Hosts) == 0 {
			return nil, fmt.Errorf("replica %s: no host (DNS name or IP) to be reached at: %w", req.Name, ErrInvalid)
		}
	case RolePrimary, RoleClient:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, fmt.Errorf("role %q (want primary, replica or client): %w", req.Role, ErrInvalid)
	}
	if req.NotBefore.IsZero() {
		req.NotBefore = time.Now().Add(-time.Minute)
	}
	if req.NotAfter.IsZero() {
		req.NotAfter = req.NotBefore.AddDate(1, 0, 0)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: req.Name},
		URIs:        []*url.URL{{Scheme: "pmemgo", Host: string(req.Role), Path: "/" + req.Name}},
		NotBefore:   req.NotBefore,
		NotAfter:    req.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: eku,
	}
	for _, h := range req.Hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h != "" && !strings.ContainsAny(h, " /:"):
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		default:
			return nil, fmt.Errorf("host %q: %w", h, ErrInvalid)
		}
	}
	return sign(tmpl, ca)
}

// sign makes a key and signs tmpl with ca, or with the key itself when
// ca is nil.
func sign(tmpl *x509.Certificate, ca *Pair) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Pair{Cert: cert, Key: key}, nil
}

// CertPEM returns the certificate in PEM.
func (p *Pair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})
}

// KeyPEM returns the private key in PEM (PKCS #8).
func (p *Pair) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(p.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Save writes the pair to dir as CertFile and KeyFile, the key readable
// by its owner only. It refuses to overwrite a key.
func (p *Pair) Save(dir string) error {
	key, err := p.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	kf, err := os.OpenFile(filepath.Join(dir, KeyFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = kf.Write(key)
	if err = errors.Join(err, kf.Close()); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, CertFile), p.CertPEM(), 0o644)
}

// Load reads a pair written by Save, as a CA to issue with.
func Load(dir string) (*Pair, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s: no PEM certificate and key: %w", dir, ErrInvalid)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CertFile), err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, KeyFile), err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s: key does not match the certificate: %w", dir, ErrInvalid)
	}
	return &Pair{Cert: cert, Key: key}, nil
}
