package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// startMemnode runs 'memnode serve --insecure --dir dir' with flags on loopback in a
// process of its own, this test binary standing in for pmemctl, and
// returns its address. The node must not run in the test's process: a
// collection that stops the world while a goroutine waits in a fault on
// a remote pool, which only the node can serve, would never end. When
// the test ends the node is sent SIGTERM and must exit cleanly.
func startMemnode(t *testing.T, dir string, flags ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"memnode", "serve", "--insecure", "--dir", dir, "--listen", "127.0.0.1:0"}, flags...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			assert.NoError(t, err, "memnode serve's exit")
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("memnode serve did not stop")
		}
	})
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		cmd.Process.Kill()
		done <- cmd.Wait()
		t.Fatal("memnode serve printed no address")
	}
	addr := lines.Text()[strings.LastIndex(lines.Text(), " ")+1:]
	go func() {
		io.Copy(io.Discard, out)
		done <- cmd.Wait()
	}()
	return addr
}

// TestMemnode runs 'memnode serve --insecure' on loopback, keeps a pool
// on it with remote.Open, and reads it back with 'memnode status', 'info'
// and 'check' on its pmem:// name.
func TestMemnode(t *testing.T) {
	dir := t.TempDir()
	addr := startMemnode(t, dir)

	type counter struct{ N int }
	url := remote.Scheme + addr + "/counter"
	h, err := remote.Open(url, &remote.Options{Backup: filepath.Join(t.TempDir(), "b"), Insecure: true, Size: 4 << 20})
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			c, err := heap.Root[counter](tx)
			if err != nil {
				return err
			}
			return heap.Set(tx, &c.N, c.N+1)
		}))
	}
	require.NoError(t, h.Close())

	out, _, code := pmemctl(t, "memnode", "status", "--insecure", "--addr", addr, "--json")
	require.Equal(t, exitOK, code)
	var st remote.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Regions, 1)
	assert.Equal(t, "counter", st.Regions[0].Name)
	assert.Equal(t, uint64(4<<20), st.Regions[0].Size)
	assert.Positive(t, st.BytesServed)
	assert.Positive(t, st.Writes)
	out, _, code = pmemctl(t, "memnode", "status", "--insecure", "--addr", addr)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "REGION")
	assert.Contains(t, out, "counter")

	out, errOut, code := pmemctl(t, "check", "--insecure", url)
	assert.Equal(t, exitOK, code, out+errOut)
	assert.Contains(t, out, url)
	out, errOut, code = pmemctl(t, "info", "--insecure", url)
	assert.Equal(t, exitOK, code, out+errOut)
	assert.Contains(t, out, "remote")

	out, _, code = pmemctl(t, "memnode", "scrub", "--insecure", "--addr", addr)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "no problems found")
	f, err := os.OpenFile(filepath.Join(dir, "counter.region"), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff}, 4096+8)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for _, where := range [][]string{{"--insecure", "--addr", addr}, {"--dir", dir}} {
		out, _, code = pmemctl(t, append([]string{"memnode", "scrub"}, where...)...)
		assert.Equal(t, exitProblems, code, where)
		assert.Contains(t, out, "region counter, offset 4096: the page does not match its checksum", where)
	}

	_, errOut, code = pmemctl(t, "check", url)
	assert.Equal(t, exitUsage, code, "a pmem:// pool needs TLS files or --insecure")
	assert.Contains(t, errOut, "--insecure")
	_, errOut, code = pmemctl(t, "check", "--insecure", remote.Scheme+addr+"/nosuch")
	assert.Equal(t, exitIO, code)
	assert.Contains(t, errOut, "no such region")
	_, _, code = pmemctl(t, "memnode", "serve", "--insecure", "--dir", t.TempDir(), "--listen", ":0")
	assert.Equal(t, exitUsage, code)
	_, _, code = pmemctl(t, "memnode", "serve", "--insecure", "--allow-read", "a=b", "--dir", t.TempDir(), "--listen", "127.0.0.1:0")
	assert.Equal(t, exitUsage, code, "a policy needs TLS")
	_, errOut, code = pmemctl(t, "memnode", "serve", "--tls-ca", "ca", "--tls-cert", "c", "--tls-key", "k",
		"--allow-write", "nameonly", "--dir", t.TempDir(), "--listen", "127.0.0.1:0")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "IDENTITY=REGION")
	_, errOut, code = pmemctl(t, "memnode", "serve", "--insecure", "--idle-timeout", "0s", "--dir", t.TempDir(), "--listen", "127.0.0.1:0")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "--idle-timeout 0s: want a positive duration")
}

// TestMemnodeMaxBytes runs 'memnode serve --max-bytes': a pool that would
// take the node past it is refused with remote.ErrNodeFull.
func TestMemnodeMaxBytes(t *testing.T) {
	addr := startMemnode(t, t.TempDir(), "--max-bytes", "6M")
	backups := t.TempDir()
	h, err := remote.Open(remote.Scheme+addr+"/a", &remote.Options{Backup: filepath.Join(backups, "a"), Insecure: true, Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	_, err = remote.Open(remote.Scheme+addr+"/b", &remote.Options{Backup: filepath.Join(backups, "b"), Insecure: true, Size: 4 << 20})
	require.ErrorIs(t, err, remote.ErrNodeFull)
	assert.ErrorContains(t, err, "limit is 6291456")
}
