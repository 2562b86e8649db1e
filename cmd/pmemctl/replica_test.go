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

// TestReplicaServe runs `replica serve`, replicates a pool to it, and
// checks `replica status` on the running server, its metrics, and, once
// stopped, `replica status --dir` and `check` on the replica.
func TestReplicaServe(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var errOut lockedBuffer
	root := newRootCmd()
	root.SetContext(ctx)
	root.SetOut(pw)
	root.SetErr(&errOut)
	done := make(chan int, 1)
	go func() {
		done <- run(root, []string{"replica", "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"})
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	require.True(t, lines.Scan())
	addr := lines.Text()[strings.LastIndex(lines.Text(), " ")+1:]
	require.True(t, lines.Scan())
	metricsURL := strings.TrimPrefix(lines.Text(), "metrics on ")
	go io.Copy(io.Discard, pr)

	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{addr}})
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

	out, _, code := pmemctl(t, "replica", "status", "--addr", addr)
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
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code, errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatal("replica serve did not stop")
	}

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
	_, stderr, code := pmemctl(t, "replica", "status", "--addr", "127.0.0.1:1")
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "connection refused")
}
