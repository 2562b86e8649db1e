// Package etcdtest runs a real one-member etcd cluster on loopback,
// embedded in a test binary, for the tests of the packages that use etcd
// (ha's coordinator, remote/etcdnames' placements): they run against
// etcd itself, never a mock. Only tests import it.
package etcdtest

import (
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is an embedded etcd server that a test can stop and start again
// on its data.
type Server struct {
	t      testing.TB
	cfg    *embed.Config
	e      *embed.Etcd
	client string
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts a server named name on 127.0.0.1, with its data in a
// temporary directory; the test's cleanup stops it.
func Start(t testing.TB, name string) *Server {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = t.TempDir()
	// Closing logs errors that are not: only a fatal one is worth seeing.
	cfg.LogLevel = "fatal"
	cfg.UnsafeNoFsync = true
	// A short election makes the one member leader sooner, and shortens
	// the wait of Close for open streams (5s plus two elections).
	cfg.TickMs, cfg.ElectionMs = 10, 100
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	client := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s := &Server{t: t, cfg: cfg, client: client.Host}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server again on its data directory, bounded in time.
func (s *Server) Start() {
	s.t.Helper()
	e, err := embed.StartEtcd(s.cfg)
	require.NoError(s.t, err)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		s.t.Fatal("etcd did not start within 20s")
	}
	s.e = e
}

// Stop stops the server, keeping its data.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// NewClient returns a client of the server, closed after the test.
func (s *Server) NewClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}
