package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/mirror"
)

// tlsFlags are the flags of a networked command: the node's certificate,
// key and CA (made by 'pmemctl cert'), or --insecure for plain TCP.
type tlsFlags struct {
	ca, cert, key string
	insecure      bool
}

func (f *tlsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.ca, "tls-ca", "", "PEM file of the CA that signs the peers' certificates")
	fs.StringVar(&f.cert, "tls-cert", "", "PEM file of this node's certificate")
	fs.StringVar(&f.key, "tls-key", "", "PEM file of this node's private key")
	fs.BoolVar(&f.insecure, "insecure", false, "use plain TCP without TLS, unauthenticated and unencrypted (refused on every interface)")
}

// check returns a usage error unless the flags give either all three
// files or --insecure.
func (f *tlsFlags) check() error {
	given := 0
	for _, s := range []string{f.ca, f.cert, f.key} {
		if s != "" {
			given++
		}
	}
	switch {
	case given > 0 && f.insecure:
		return usageError(errors.New("--insecure with --tls-* flags: choose one"))
	case f.insecure:
		return nil
	case given < 3:
		return usageError(errors.New("give --tls-ca, --tls-cert and --tls-key (see 'pmemctl cert'), or --insecure for plain TCP"))
	}
	return nil
}

// config loads the TLS configuration, as a server's or a client's; with
// --insecure it warns on errOut and returns nil.
func (f *tlsFlags) config(server bool, errOut io.Writer) (*tls.Config, error) {
	if f.insecure {
		fmt.Fprintln(errOut, "warning: --insecure: plain TCP without TLS, peers are neither authenticated nor encrypted")
		return nil, nil
	}
	return certs.LoadTLS(f.ca, f.cert, f.key, server)
}

// checkInsecureListen refuses plain TCP on every interface.
func checkInsecureListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError(fmt.Errorf("--listen %s: %w", addr, err))
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return usageError(fmt.Errorf("--listen %s: --insecure on every interface is refused: listen on a loopback or private address, or use TLS", addr))
	}
	return nil
}

// policyFlags are the authorization flags of 'replica serve'.
type policyFlags struct {
	primaries, status []string
}

func (f *policyFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.primaries, "allow-primary", nil, "identity (certificate name) that may act as a primary, as NAME for every pool or NAME=UUID for one; repeat (default: any certificate the CA signed)")
	fs.StringArrayVar(&f.status, "allow-status", nil, "identity that may read the status; repeat (default: any certificate the CA signed)")
}

// policy returns the policy the flags describe.
func (f *policyFlags) policy() (mirror.Policy, error) {
	var p mirror.Policy
	if f.primaries != nil {
		p.Primaries = map[string][][16]byte{}
		all := map[string]bool{}
		for _, a := range f.primaries {
			name, pool, hasPool := a, "", false
			if i := strings.LastIndex(a, "="); i >= 0 {
				name, pool, hasPool = a[:i], a[i+1:], true
			}
			if name == "" {
				return p, usageError(fmt.Errorf("--allow-primary %q: no name", a))
			}
			if !hasPool {
				all[name] = true
				p.Primaries[name] = nil
				continue
			}
			u, err := uuid.Parse(pool)
			if err != nil {
				return p, usageError(fmt.Errorf("--allow-primary %q: pool UUID: %w", a, err))
			}
			if !all[name] {
				p.Primaries[name] = append(p.Primaries[name], u)
			}
		}
	}
	if f.status != nil {
		p.Status = append([]string{}, f.status...)
	}
	return p, nil
}
