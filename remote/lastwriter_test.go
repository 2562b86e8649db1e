package remote_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/remote"
)

// lastWriter returns the last writer the node at addr records for region
// name.
func lastWriter(t *testing.T, addr, name string) string {
	t.Helper()
	st, err := remote.QueryStatus(t.Context(), addr, nil)
	require.NoError(t, err)
	for _, r := range st.Regions {
		if r.Name == name {
			return r.LastWriter
		}
	}
	t.Fatalf("the node holds no region %s", name)
	return ""
}

// backupComplete reads whether the state kept beside backup says it
// holds the whole region.
func backupComplete(t *testing.T, backup string) bool {
	t.Helper()
	b, err := os.ReadFile(backup + ".remote")
	require.NoError(t, err)
	var side struct{ Complete bool }
	require.NoError(t, json.Unmarshal(b, &side))
	return side.Complete
}

// TestFailedOpenKeepsLastWriter opens a pool that its writer left
// complete in its backup from another backup, in ways that fail after
// the region was claimed: the node's last-writer mark stays the
// writer's, whose backup is still complete when it opens again.
func TestFailedOpenKeepsLastWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	key := newKey(t)
	for _, name := range []string{"plain", "sealed"} {
		opts := openOpts(dir, name+".backup")
		opts.Size = 8 << 20
		if name == "sealed" {
			opts.Heap.Key = key
		}
		h, err := remote.Open(node.url(name), opts)
		require.NoError(t, err)
		build(t, h, 3)
		require.NoError(t, h.Close())
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "dir.backup"), 0o700))

	for _, tc := range []struct {
		name, region, backup string
		key                  []byte
	}{
		{"wrong key", "sealed", "other.backup", newKey(t)},
		{"no key for a sealed pool", "sealed", "nokey.backup", nil},
		{"a key for a plain pool", "plain", "keyed.backup", key},
		{"backup is a directory", "plain", "dir.backup", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := lastWriter(t, node.addr, tc.region)
			opts := openOpts(dir, tc.backup)
			opts.Heap.Key = tc.key
			_, err := remote.Open(node.url(tc.region), opts)
			require.Error(t, err)
			assert.Equal(t, before, lastWriter(t, node.addr, tc.region), "a failed open must not take the mark")

			opts = openOpts(dir, tc.region+".backup")
			if tc.region == "sealed" {
				opts.Heap.Key = key
			}
			h, err := remote.Open(node.url(tc.region), opts)
			require.NoError(t, err)
			assert.True(t, backupComplete(t, opts.Backup), "the writer's backup is still complete")
			verify(t, h, 3)
			require.NoError(t, h.Close())
		})
	}
}

// TestOpenTakesTheMark opens, from another backup, a pool whose writer
// left it: the open itself makes it the last writer, though it writes
// nothing to the pool, so that commits it then makes while the node does
// not answer are handed over when it opens again, not refused as
// diverged from another writer's.
func TestOpenTakesTheMark(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("g"), dir, 10)
	before := lastWriter(t, node.addr, "g")

	opts := openOpts(dir, "b.backup")
	opts.RemoteTimeout = 50 * time.Millisecond
	h, err := remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	assert.NotEqual(t, before, lastWriter(t, node.addr, "g"))
	verify(t, h, 10)
	require.NoError(t, node.cmd.Process.Signal(syscall.SIGSTOP))
	within(t, time.Minute, func() { build(t, h, 5) })
	st, _ := remote.Stats(h.Device())
	require.Positive(t, st.SuspectFences)
	require.NoError(t, h.Close())
	require.NoError(t, node.cmd.Process.Signal(syscall.SIGCONT))

	opts = openOpts(dir, "b.backup")
	h, err = remote.Open(node.url("g"), opts)
	require.NoError(t, err)
	verify(t, h, 15)
	require.NoError(t, h.Close())
	h, err = remote.Open(node.url("g"), openOpts(dir, "cold.backup"))
	require.NoError(t, err)
	verify(t, h, 15)
	require.NoError(t, h.Close())
}

// TestOpenWaitsForAClaimBeingReleased opens a region while another open
// of it is being closed: the node releases the first claim only once it
// reads the close, and the second open waits for that rather than fail
// with ErrBusy. While the first stays open, the second fails with it.
func TestOpenWaitsForAClaimBeingReleased(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	node := startNode(t, t.TempDir(), "127.0.0.1:0")
	dir := t.TempDir()
	createGraph(t, node.url("g"), dir, 5)
	h, err := remote.Open(node.url("g"), openOpts(dir, "a.backup"))
	require.NoError(t, err)
	_, err = remote.Open(node.url("g"), openOpts(dir, "b.backup"))
	require.ErrorIs(t, err, remote.ErrBusy, "a region open elsewhere")

	closed := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		closed <- h.Close()
	}()
	h2, err := remote.Open(node.url("g"), openOpts(dir, "c.backup"))
	require.NoError(t, err)
	require.NoError(t, <-closed)
	verify(t, h2, 5)
	require.NoError(t, h2.Close())
}
