package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
)

func TestGrowCommand(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "golden.pool", false)

	out, stderr, code := pmemctl(t, "grow", g.path, "--size", "8M")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "from 2 MiB to 8 MiB (8388608 bytes")
	assert.Contains(t, out, "at most 64 MiB")

	out, _, code = pmemctl(t, "info", g.path)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "size          8 MiB (8388608 bytes)")
	assert.Contains(t, out, "max size      64 MiB (67108864 bytes)")
	out, _, code = pmemctl(t, "check", g.path)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "0 problems")

	out, _, code = pmemctl(t, "grow", g.path, "--size", "4M")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "8 MiB already")

	_, stderr, code = pmemctl(t, "grow", g.path, "--size", "128M")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "beyond the pool's maximum size of 64 MiB (67108864 bytes): raise it with --max-size")

	out, stderr, code = pmemctl(t, "grow", g.path, "--size", "128M", "--max-size", "256M")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "to 128 MiB")
	assert.Contains(t, out, "at most 256 MiB")

	_, stderr, code = pmemctl(t, "grow", g.path)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "--size is required")

	// The objects made before the growths are all there.
	out, _, code = pmemctl(t, "check", "--leaks", g.path)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "0 problems")
	h, err := heap.Open(g.path, &heap.Options{ReadOnly: true})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, uint64(128<<20), h.Stats().Size)
}

// TestGrowCommandSealed grows a sealed pool with its key: it stays
// sealed and checks clean with the key; without the key grow refuses it.
func TestGrowCommandSealed(t *testing.T) {
	pool, keyFile := sealedPoolFile(t)
	_, stderr, code := pmemctl(t, "grow", pool, "--size", "16M")
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "open it with its key")

	out, stderr, code := pmemctl(t, "grow", pool, "--size", "16M", "--key-file", keyFile)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "from 4 MiB to 16 MiB")
	fi, err := os.Stat(pool)
	require.NoError(t, err)
	assert.Equal(t, seal.FileSize(16<<20), fi.Size())
	out, stderr, code = pmemctl(t, "check", pool, "--key-file", keyFile)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "0 problems")
	out, stderr, code = pmemctl(t, "info", pool, "--key-file", keyFile)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "size          16 MiB (16777216 bytes)")
}

func TestGrowCommandLockedPool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: 1 << 20})
	require.NoError(t, err)
	defer h.Close()
	_, stderr, code := pmemctl(t, "grow", path, "--size", "2M", "--timeout", "10ms")
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "lock")
}

// TestInfoFileLongerThanPool: the bytes a growth interrupted before its
// header leaves after the pool are no problem for info and check.
func TestInfoFileLongerThanPool(t *testing.T) {
	g := newGoldenPool(t, t.TempDir(), "golden.pool", false)
	f, err := os.OpenFile(g.path, os.O_RDWR, 0)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(4<<20))
	require.NoError(t, f.Close())
	out, _, code := pmemctl(t, "info", g.path)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "4194304 bytes, 2097152 more than recorded: a growth was interrupted before its header was written")
	out, _, code = pmemctl(t, "check", g.path)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "0 problems")
	out, stderr, code := pmemctl(t, "grow", g.path, "--size", "4M")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "from 2 MiB to 4 MiB")
}
