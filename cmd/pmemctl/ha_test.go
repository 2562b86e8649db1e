package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
)

type haCounter struct{ N uint64 }

// TestHAStatus checks 'ha status' with and without a primary.
func TestHAStatus(t *testing.T) {
	coordDir := t.TempDir()
	out, _, code := pmemctl(t, "ha", "status", "--name", "orders", "--coord-dir", coordDir)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "pool orders: no primary")

	c, err := ha.NewLeaseFile(coordDir, ha.LeaseFileOptions{TTL: time.Minute})
	require.NoError(t, err)
	defer c.Close()
	term, err := c.Campaign(context.Background(), ha.Candidate{Pool: "orders", Node: "n1"})
	require.NoError(t, err)
	out, _, code = pmemctl(t, "ha", "status", "--name", "orders", "--coord-dir", coordDir, "--json")
	require.Equal(t, exitOK, code)
	var st struct {
		Pool    string
		Primary ha.Leader
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	assert.Equal(t, "n1", st.Primary.Node)
	assert.Equal(t, term.Token, st.Primary.Token)
}

// TestHAUsage checks that the ha commands refuse incomplete or insecure
// command lines as usage errors.
func TestHAUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"ha", "status", "--coord-dir", dir},
		{"ha", "status", "--name", "p"},
		{"ha", "status", "--name", "p", "--coord-dir", dir, "--etcd", "127.0.0.1:1"},
		{"ha", "standby", "--name", "p", "--coord-dir", dir},
		{"ha", "standby", "--name", "p", "--coord-dir", dir, "--dir", dir, "--listen", "127.0.0.1:0", "--insecure"},
		{"ha", "guard", "--name", "p", "--coord-dir", dir, "--pool", "x", "--standby", "127.0.0.1:1", "--insecure", "--", "true"},
		{"ha", "guard", "--name", "p", "--coord-dir", dir, "--pool", "x", "--standby", "127.0.0.1:1"},
		{"ha", "power-lost"},
	} {
		_, _, code := pmemctl(t, args...)
		assert.Equal(t, exitUsage, code, "%v", args)
	}
}

// TestHAGuardToStandby runs 'ha standby' and 'ha guard' with TLS: the
// guarded application exits, the guard ships the pool and hands it over,
// and the standby promotes it and starts its application on it.
func TestHAGuardToStandby(t *testing.T) {
	dir, coordDir := t.TempDir(), t.TempDir()
	d := tlstesting.Default(t)
	serverTLS := d.WriteFiles(t, filepath.Join(dir, "replica"), d.Replica).Args()
	primaryTLS := d.WriteFiles(t, filepath.Join(dir, "primary"), d.Primary).Args()
	pool := filepath.Join(dir, "app.pool")
	h, err := heap.Open(pool, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[haCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, 42)
	}))
	require.NoError(t, h.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	errOut := &lockedBuffer{}
	root := newRootCmd()
	root.SetContext(ctx)
	root.SetOut(pw)
	root.SetErr(errOut)
	marker := filepath.Join(dir, "started")
	done := make(chan int, 1)
	go func() {
		done <- run(root, append([]string{"ha", "standby", "--dir", filepath.Join(dir, "standby"), "--listen", "127.0.0.1:0", "--handoff-listen", "127.0.0.1:0",
			"--name", "orders", "--coord-dir", coordDir}, append(serverTLS, "--", "sh", "-c", `echo "$PMEMGO_HA_POOL {pool}" > `+marker)...))
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	require.True(t, lines.Scan(), errOut.String())
	var replica, handoff string
	fields := strings.Fields(lines.Text())
	replica, handoff = strings.TrimSuffix(fields[5], ","), fields[len(fields)-1]
	go io.Copy(io.Discard, pr)

	out, _, code := pmemctl(t, append([]string{"ha", "guard", "--pool", pool, "--standby", replica, "--handoff", handoff,
		"--name", "orders", "--coord-dir", coordDir, "--node", "n1", "--budget", "10s"}, append(primaryTLS, "--", "true")...)...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "application exited: status 0")
	assert.Contains(t, out, "handed over: epoch 1")

	select {
	case code := <-done:
		require.Equal(t, exitOK, code, errOut.String())
	case <-ctx.Done():
		t.Fatal("standby did not promote and run its application")
	}
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	promoted := filepath.Join(dir, "standby", "promoted", "orders.pool")
	assert.Equal(t, promoted+" "+promoted+"\n", string(b))
	h, err = heap.Open(promoted, nil)
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		c, err := heap.Root[haCounter](tx)
		if err == nil {
			assert.Equal(t, uint64(42), c.N)
		}
		return err
	}))
}
