package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
		{"ha", "status", "--name", "p", "--etcd", "127.0.0.1:1", "--etcd-tls"},
		{"ha", "guard", "--name", "p", "--coord-dir", dir, "--pool", "x", "--standby", "127.0.0.1:1", "--attach", "1", "--", "true"},
	} {
		_, _, code := pmemctl(t, args...)
		assert.Equal(t, exitUsage, code, "%v", args)
	}
}

// standbyCmd is a running 'ha standby'.
type standbyCmd struct {
	replica, handoff string
	errOut           *lockedBuffer
	done             chan int
}

// startStandbyCmd runs 'ha standby' for pool "orders" with the replica's
// certificate, and app as its application.
func startStandbyCmd(t *testing.T, ctx context.Context, dir, coordDir string, app ...string) *standbyCmd {
	t.Helper()
	return startStandbyFlags(t, ctx, dir, coordDir, nil, app...)
}

// startStandbyFlags is startStandbyCmd with more flags for 'ha standby'.
func startStandbyFlags(t *testing.T, ctx context.Context, dir, coordDir string, flags []string, app ...string) *standbyCmd {
	t.Helper()
	d := tlstesting.Default(t)
	serverTLS := d.WriteFiles(t, filepath.Join(dir, "replica"), d.Replica).Args()
	pr, pw := io.Pipe()
	s := &standbyCmd{errOut: &lockedBuffer{}, done: make(chan int, 1)}
	root := newRootCmd()
	root.SetContext(ctx)
	root.SetOut(pw)
	root.SetErr(s.errOut)
	go func() {
		s.done <- run(root, append([]string{"ha", "standby", "--dir", filepath.Join(dir, "standby"), "--listen", "127.0.0.1:0", "--handoff-listen", "127.0.0.1:0",
			"--name", "orders", "--coord-dir", coordDir}, append(append(serverTLS, flags...), append([]string{"--"}, app...)...)...))
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	require.True(t, lines.Scan(), s.errOut.String())
	fields := strings.Fields(lines.Text())
	s.replica, s.handoff = strings.TrimSuffix(fields[5], ","), fields[len(fields)-1]
	go io.Copy(io.Discard, pr)
	return s
}

// wait waits for the standby to exit after running its application.
func (s *standbyCmd) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case code := <-s.done:
		require.Equal(t, exitOK, code, s.errOut.String())
	case <-ctx.Done():
		t.Fatal("standby did not promote and run its application")
	}
}

// guardArgs returns the arguments of 'ha guard' for pool, handing over to s.
func (s *standbyCmd) guardArgs(t *testing.T, dir, coordDir, pool string, extra ...string) []string {
	d := tlstesting.Default(t)
	primaryTLS := d.WriteFiles(t, filepath.Join(dir, "primary"), d.Primary).Args()
	args := []string{"ha", "guard", "--pool", pool, "--standby", s.replica, "--handoff", s.handoff,
		"--name", "orders", "--coord-dir", coordDir, "--node", "n1", "--budget", "10s"}
	return append(append(args, primaryTLS...), extra...)
}

// makeCounterPool creates a pool whose counter is 42.
func makeCounterPool(t *testing.T, path string) {
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[haCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, 42)
	}))
	require.NoError(t, h.Close())
}

// requireCounter checks that the pool at path holds the counter 42.
func requireCounter(t *testing.T, path string) {
	h, err := heap.Open(path, nil)
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

// TestHAGuardToStandby runs 'ha standby' and 'ha guard' with TLS: the
// guarded application exits, the guard ships the pool and hands it over,
// and the standby promotes it and starts its application on it.
func TestHAGuardToStandby(t *testing.T) {
	dir, coordDir := t.TempDir(), t.TempDir()
	pool := filepath.Join(dir, "app.pool")
	makeCounterPool(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	marker := filepath.Join(dir, "started")
	sb := startStandbyCmd(t, ctx, dir, coordDir, "sh", "-c", `echo "$PMEMGO_HA_POOL {pool}" > `+marker)

	out, _, code := pmemctl(t, sb.guardArgs(t, dir, coordDir, pool, "--", "true")...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "application exited: status 0")
	assert.Contains(t, out, "handed over: epoch 1")

	sb.wait(t, ctx)
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	promoted := filepath.Join(dir, "standby", "promoted", "orders.pool")
	assert.Equal(t, promoted+" "+promoted+"\n", string(b))
	requireCounter(t, promoted)

	out, _, code = pmemctl(t, "ha", "status", "--name", "orders", "--coord-dir", coordDir, "--standby-dir", filepath.Join(dir, "standby"))
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "last promotion: "+promoted)
	assert.Contains(t, out, "(handoff), epoch 1 batch")
	assert.Contains(t, out, "handoff of")
}

// TestHAGuardToStandbySealed hands a sealed pool over with the commands:
// the guard and the standby each read the key from --key-file, the
// standby's replica holds only ciphertext, and the promoted pool opens
// with the key alone.
func TestHAGuardToStandbySealed(t *testing.T) {
	dir, coordDir := t.TempDir(), t.TempDir()
	keyFile := filepath.Join(dir, "pool.key")
	_, stderr, code := pmemctl(t, "key", "new", keyFile)
	require.Equal(t, exitOK, code, stderr)
	flags := []string{"--key-file", keyFile}
	key, err := (&keyFlag{file: keyFile}).load()
	require.NoError(t, err)
	pool := filepath.Join(dir, "app.pool")
	h, err := heap.Open(pool, &heap.Options{Size: 8 << 20, Key: key})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[haCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, 0x6d61726b65723432) // "marker42", little-endian
	}))
	require.NoError(t, h.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb := startStandbyFlags(t, ctx, dir, coordDir, flags, "true")

	out, stderr, code := pmemctl(t, sb.guardArgs(t, dir, coordDir, pool, append(flags, "--", "true")...)...)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "the whole sealed file: ")
	sb.wait(t, ctx)
	promoted := filepath.Join(dir, "standby", "promoted", "orders.pool")
	h, err = heap.Open(promoted, &heap.Options{Key: key})
	require.NoError(t, err)
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		c, err := heap.Root[haCounter](tx)
		if err == nil {
			assert.Equal(t, uint64(0x6d61726b65723432), c.N)
		}
		return err
	}))
	require.NoError(t, h.Close())
	files, err := filepath.Glob(filepath.Join(dir, "standby", "*"))
	require.NoError(t, err)
	for _, f := range append(files, promoted) {
		if b, err := os.ReadFile(f); err == nil {
			assert.NotContains(t, string(b), "24rekram", "plaintext in %s", f)
		}
	}
}

// TestHASignals runs a guarded application that does not stop by itself
// and signals the guard: 'ha power-lost' makes it kill the application,
// 'ha switchover' stop it with SIGTERM, and in both cases hand the pool
// over to the standby.
func TestHASignals(t *testing.T) {
	for _, tc := range []struct {
		cmd, sent, why string
		attach         bool
	}{
		{"power-lost", "sent SIGPWR", "power lost: saving", false},
		{"switchover", "sent SIGUSR1", "switchover: saving", false},
		{"power-lost", "sent SIGPWR", "power lost: saving", true},
	} {
		t.Run(fmt.Sprintf("%s/attach=%v", tc.cmd, tc.attach), func(t *testing.T) {
			dir, coordDir := t.TempDir(), t.TempDir()
			pool := filepath.Join(dir, "app.pool")
			makeCounterPool(t, pool)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sb := startStandbyCmd(t, ctx, dir, coordDir, "true")
			pidFile := filepath.Join(dir, "guard.pid")

			type result struct {
				out  string
				code int
			}
			guard := make(chan result, 1)
			app := []string{"--", "sleep", "30"}
			if tc.attach {
				c := exec.Command("sleep", "30")
				require.NoError(t, c.Start())
				go c.Wait()
				t.Cleanup(func() { c.Process.Kill() })
				app = []string{"--attach", strconv.Itoa(c.Process.Pid)}
			}
			go func() {
				out, _, code := pmemctl(t, sb.guardArgs(t, dir, coordDir, pool, append([]string{"--pid-file", pidFile}, app...)...)...)
				guard <- result{out, code}
			}()
			require.Eventually(t, func() bool { _, err := os.Stat(pidFile); return err == nil }, 10*time.Second, 10*time.Millisecond)
			out, _, code := pmemctl(t, "ha", tc.cmd, "--pid-file", pidFile)
			require.Equal(t, exitOK, code)
			assert.Contains(t, out, tc.sent)

			r := <-guard
			require.Equal(t, exitOK, r.code)
			assert.Contains(t, r.out, tc.why)
			assert.Contains(t, r.out, "handed over")
			sb.wait(t, ctx)
			requireCounter(t, filepath.Join(dir, "standby", "promoted", "orders.pool"))
		})
	}
}

// TestHAPromote promotes a copy with 'ha promote': a copy taken before is
// refused from then on.
func TestHAPromote(t *testing.T) {
	dir, coordDir := t.TempDir(), t.TempDir()
	pool, old := filepath.Join(dir, "p.pool"), filepath.Join(dir, "old.pool")
	makeCounterPool(t, pool)
	b, err := os.ReadFile(pool)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(old, b, 0o644))

	out, _, code := pmemctl(t, "ha", "promote", pool, "--name", "orders", "--coord-dir", coordDir)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "incarnation 1 of pool orders registered")
	out, _, code = pmemctl(t, "ha", "promote", pool, "--name", "orders", "--coord-dir", coordDir)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "incarnation 2 of pool orders registered")
	_, errOut, code := pmemctl(t, "ha", "promote", old, "--name", "orders", "--coord-dir", coordDir)
	assert.NotEqual(t, exitOK, code)
	assert.Contains(t, errOut, "older than incarnation 2")
}
