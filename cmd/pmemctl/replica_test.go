package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveCmd is a running 'replica serve'.
type serveCmd struct {
	addr, metricsURL string
	errOut           *lockedBuffer
	cancel           func()
	done             chan int
}

// startServe runs 'replica serve' with args on a loopback port, with
// metrics. It is stopped when the test ends if the test did not stop it.
func startServe(t *testing.T, dir string, args ...string) *serveCmd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &serveCmd{errOut: &lockedBuffer{}, cancel: cancel, done: make(chan int, 1)}
	root := newRootCmd()
	root.SetContext(ctx)
	root.SetOut(pw)
	root.SetErr(s.errOut)
	go func() {
		s.done <- run(root, append([]string{"replica", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"}, args...))
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	require.True(t, lines.Scan(), s.errOut.String())
	s.addr = lines.Text()[strings.LastIndex(lines.Text(), " ")+1:]
	require.True(t, lines.Scan())
	s.metricsURL = strings.TrimPrefix(lines.Text(), "metrics on ")
	go io.Copy(io.Discard, pr)
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// stop stops the server and checks that it exited cleanly.
func (s *serveCmd) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.done:
		assert.Equal(t, exitOK, code, s.errOut.String())
		s.done <- code
	case <-time.After(10 * time.Second):
		t.Fatal("replica serve did not stop")
	}
}

// TestReplicaServe makes certificates with 'cert', runs `replica serve`
// with TLS, replicates a pool to it, and checks `replica status` on the
// running server, its metrics, and, once stopped, `replica status --dir`
// and `check` on the replica.
func TestReplicaServe(t *testing.T) {
	dir := t.TempDir()
	nodes := makeCerts(t)
	srv := startServe(t, dir, nodes["replica-1"].Args()...)
	addr, metricsURL := srv.addr, srv.metricsURL

	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{addr}, TLS: loadTLS(t, nodes["app-1"])})
	require.NoError(t, err)
	type counter struct{ N uint64 }
	for i := range uint64(10) {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			c, err := heap.Root[counter](tx)
			if err != nil {
				return err
			}
			return heap.Set(tx, &c.N, i)
		}))
	}
	seq := m.Seq()

	out, _, code := pmemctl(t, append([]string{"replica", "status", "--addr", addr}, nodes["ops"].Args()...)...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "EPOCH")
	assert.Contains(t, out, "streaming")
	assert.Regexp(t, `\s1\s+`+itoa(seq)+`\s`, out, "epoch 1, applied seq")

	resp, err := http.Get(metricsURL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "pmemgo_replica_batches_total")
	assert.Contains(t, string(body), "pmemgo_replica_applied_seq")

	require.NoError(t, m.Close())
	require.NoError(t, h.Close())
	srv.stop(t)

	out, _, code = pmemctl(t, "replica", "status", "--dir", dir, "--json")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, `"seq": `+itoa(seq))
	pools, err := filepath.Glob(filepath.Join(dir, "*.pool"))
	require.NoError(t, err)
	require.Len(t, pools, 1)
	out, _, code = pmemctl(t, "check", pools[0])
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "0 problems")
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func TestReplicaUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"serve without dir", []string{"replica", "serve", "--listen", "127.0.0.1:0"}, "--dir and --listen"},
		{"serve without TLS", []string{"replica", "serve", "--dir", "d", "--listen", "127.0.0.1:0"}, "--tls-ca, --tls-cert and --tls-key"},
		{"serve with part of TLS", []string{"replica", "serve", "--dir", "d", "--listen", "127.0.0.1:0", "--tls-ca", "ca.pem"}, "--tls-ca, --tls-cert and --tls-key"},
		{"serve with TLS and insecure", []string{"replica", "serve", "--dir", "d", "--listen", "127.0.0.1:0", "--tls-ca", "ca.pem", "--insecure"}, "choose one"},
		{"serve insecure on every interface", []string{"replica", "serve", "--dir", "d", "--listen", ":0", "--insecure"}, "every interface"},
		{"serve insecure on 0.0.0.0", []string{"replica", "serve", "--dir", "d", "--listen", "0.0.0.0:0", "--insecure"}, "every interface"},
		{"serve insecure on ::", []string{"replica", "serve", "--dir", "d", "--listen", "[::]:0", "--insecure"}, "every interface"},
		{"serve insecure with a policy", []string{"replica", "serve", "--dir", "d", "--listen", "127.0.0.1:0", "--insecure", "--allow-status", "ops"}, "need TLS"},
		{"status without TLS", []string{"replica", "status", "--addr", "127.0.0.1:1"}, "--tls-ca, --tls-cert and --tls-key"},
		{"status without source", []string{"replica", "status"}, "one of --addr and --dir"},
		{"status with both", []string{"replica", "status", "--addr", "x", "--dir", "y"}, "one of --addr and --dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := pmemctl(t, tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

func TestReplicaStatusUnreachable(t *testing.T) {
	_, stderr, code := pmemctl(t, "replica", "status", "--addr", "127.0.0.1:1", "--insecure")
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "connection refused")
}
