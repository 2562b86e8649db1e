package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/mirror"
)

// replicateOnce replicates a new pool to a replica server on dir, then
// stops both, and returns the primary (open) and its UUID in hex.
func replicateOnce(t *testing.T, dir string) (*heap.Heap, string) {
	t.Helper()
	srv, err := mirror.NewServer(mirror.ServerOptions{Dir: dir, Insecure: true})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{l.Addr().String()}, Insecure: true})
	require.NoError(t, err)
	type counter struct{ N uint64 }
	// Three commits: the last two's records, still live in the replica,
	// cover only the counter, so damage to the slab header is not
	// repaired by recovery redoing those commits.
	for n := range uint64(3) {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			c, err := heap.Root[counter](tx)
			if err != nil {
				return err
			}
			return heap.Set(tx, &c.N, n+1)
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, m.Flush(ctx))
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())
	u := h.UUID()
	return h, hex.EncodeToString(u[:])
}

// TestReplicaScrub verifies a stopped replica's directory: a sound pool
// passes, bit rot in a slab header fails with exit status 2.
func TestReplicaScrub(t *testing.T) {
	dir := t.TempDir()
	h, pool := replicateOnce(t, dir)
	out, _, code := pmemctl(t, "replica", "scrub", "--dir", dir)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, pool+" ok")

	hdr, err := layout.DecodeHeader(h.Device().Bytes())
	require.NoError(t, err)
	path := filepath.Join(dir, pool+".pool")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[hdr.SlabOff+8] ^= 0x40
	require.NoError(t, os.WriteFile(path, b, 0o644))
	out, _, code = pmemctl(t, "replica", "scrub", "--dir", dir)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, pool+" FAILED")
	assert.Contains(t, out, "1 failed")
}

// TestReplicaResetFencing loses a pool's fencing state: the server sets
// the pool aside until reset-fencing, after which it is served again.
func TestReplicaResetFencing(t *testing.T) {
	dir := t.TempDir()
	_, pool := replicateOnce(t, dir)
	require.NoError(t, os.Remove(filepath.Join(dir, pool+".fence")))
	srv, err := mirror.NewServer(mirror.ServerOptions{Dir: dir, Insecure: true})
	require.NoError(t, err)
	st := srv.Status()
	require.Len(t, st, 1)
	assert.Equal(t, "failed", st[0].State)
	require.NoError(t, srv.Close())

	_, stderr, code := pmemctl(t, "replica", "reset-fencing", "--dir", dir)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "--dir and --pool")
	_, stderr, code = pmemctl(t, "replica", "reset-fencing", "--dir", dir, "--pool", "00112233445566778899aabbccddeeff")
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "no pool")
	out, _, code := pmemctl(t, "replica", "reset-fencing", "--dir", dir, "--pool", pool, "--epoch", "3")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "fencing reset")

	srv, err = mirror.NewServer(mirror.ServerOptions{Dir: dir, Insecure: true})
	require.NoError(t, err)
	defer srv.Close()
	st = srv.Status()
	require.Len(t, st, 1)
	assert.Equal(t, "idle", st[0].State)
	assert.Equal(t, uint64(3), st[0].SeenEpoch)
}

// TestReplicaServeLimits runs `replica serve` with a pool size cap below
// the primary's pool: the primary is refused with ErrLimit, and scrub
// --addr answers.
func TestReplicaServeLimits(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{}
	root := newRootCmd()
	root.SetContext(ctx)
	pr, pw := io.Pipe()
	root.SetOut(pw)
	root.SetErr(out)
	done := make(chan int, 1)
	go func() {
		done <- run(root, []string{"replica", "serve", "--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--insecure",
			"--max-pool-size", "2M", "--max-conns", "8", "--idle-timeout", "5s", "--max-memory", "64M"})
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	require.True(t, lines.Scan())
	addr := lines.Text()[strings.LastIndex(lines.Text(), " ")+1:]
	go io.Copy(io.Discard, pr)

	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{addr}, Insecure: true})
	require.NoError(t, err)
	defer m.Close()
	for deadline := time.Now().Add(10 * time.Second); !errors.Is(m.Status()[0].Err, mirror.ErrLimit); time.Sleep(10 * time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "the primary was not refused: %v", m.Status()[0].Err)
	}
	assert.Contains(t, m.Status()[0].Err.Error(), "pools of 2097152 bytes at most")

	stdout, _, code := pmemctl(t, "replica", "scrub", "--addr", addr, "--insecure")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "0 pools, 0 failed")
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code, out.String())
	case <-time.After(10 * time.Second):
		t.Fatal("replica serve did not stop")
	}
}
