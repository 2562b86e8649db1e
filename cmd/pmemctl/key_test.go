package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/filetest"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/remote"
)

// sealedPoolFile makes a key with key new and a sealed pool with create
// --key-file, and returns their paths.
func sealedPoolFile(t *testing.T) (pool, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	keyFile = filepath.Join(dir, "pool.key")
	out, stderr, code := pmemctl(t, "key", "new", keyFile)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "wrote a new pool key")
	pool = filepath.Join(dir, "sealed.pool")
	out, stderr, code = pmemctl(t, "create", pool, "--size", "4M", "--key-file", keyFile)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "created sealed "+pool)
	return pool, keyFile
}

func TestKeyNew(t *testing.T) {
	_, keyFile := sealedPoolFile(t)
	fi, err := os.Stat(keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	b, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	assert.Len(t, b, 2*seal.KeySize+1)

	_, stderr, code := pmemctl(t, "key", "new", keyFile)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "never overwrites")
}

func TestCheckSealed(t *testing.T) {
	pool, keyFile := sealedPoolFile(t)
	other := filepath.Join(t.TempDir(), "other.key")
	_, _, code := pmemctl(t, "key", "new", other)
	require.Equal(t, exitOK, code)

	out, stderr, code := pmemctl(t, "check", pool, "--key-file", keyFile)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, pool+": 0 problems")
	assert.Contains(t, out, "objects")

	out, stderr, code = pmemctl(t, "check", pool)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "cannot be checked without the key")

	_, stderr, code = pmemctl(t, "check", pool, "--key-file", other)
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "key id")

	out, _, code = pmemctl(t, "info", pool, "--key-file", keyFile)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "uuid")
	assert.Contains(t, out, "sealed (AES-256-GCM", "info names the sealed device over the inner one")
	_, stderr, code = pmemctl(t, "info", pool)
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "--key-file")
	out, stderr, code = pmemctl(t, "dump", pool, "--key-file", keyFile)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "[")

	// A record that does not authenticate: found with the key at its file
	// offset; the structure without the key still holds.
	rec := seal.RecordOff(8192)
	filetest.FlipByte(t, pool, rec+40)
	out, _, code = pmemctl(t, "check", pool, "--key-file", keyFile)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, fmt.Sprintf("file offset %d", rec))
	_, _, code = pmemctl(t, "check", pool)
	assert.Equal(t, exitOK, code)
	// A record out of form is seen without the key too.
	filetest.FlipByte(t, pool, rec+seal.RecordSize-1)
	out, _, code = pmemctl(t, "check", pool)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, fmt.Sprintf("offset %d", rec))
}

func TestKeyRotate(t *testing.T) {
	pool, keyFile := sealedPoolFile(t)
	next := filepath.Join(t.TempDir(), "next.key")
	_, _, code := pmemctl(t, "key", "new", next)
	require.Equal(t, exitOK, code)
	out, stderr, code := pmemctl(t, "key", "rotate", pool, "--key-file", keyFile, "--new-key-file", next)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "sealed under the key in "+next)
	out, stderr, code = pmemctl(t, "check", pool, "--key-file", next)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, pool+": 0 problems")
	_, stderr, code = pmemctl(t, "check", pool, "--key-file", keyFile)
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "key id")
	_, stderr, code = pmemctl(t, "key", "rotate", pool, "--key-file", next)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "required")
}

// TestKeyRotateRemote rotates the key of a sealed pool on a memory node
// with 'key rotate pmem://...', then checks it through the node with
// each key.
func TestKeyRotateRemote(t *testing.T) {
	dir := t.TempDir()
	addr := startMemnode(t, filepath.Join(dir, "node"))

	keyFile, next := filepath.Join(dir, "pool.key"), filepath.Join(dir, "next.key")
	for _, f := range []string{keyFile, next} {
		_, _, code := pmemctl(t, "key", "new", f)
		require.Equal(t, exitOK, code)
	}
	key, err := (&keyFlag{file: keyFile}).load()
	require.NoError(t, err)
	url := remote.Scheme + addr + "/sealed"
	backup := filepath.Join(dir, "pool.backup")
	opts := &remote.Options{Backup: backup, Insecure: true, Size: 4 << 20}
	opts.Heap.Key = key
	h, err := remote.Open(url, opts)
	require.NoError(t, err)
	require.NoError(t, h.Close())

	_, stderr, code := pmemctl(t, "key", "rotate", url, "--key-file", keyFile, "--new-key-file", next, "--insecure")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "--backup")
	out, stderr, code := pmemctl(t, "key", "rotate", url, "--key-file", keyFile, "--new-key-file", next, "--insecure", "--backup", backup)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "sealed under the key in "+next)
	out, stderr, code = pmemctl(t, "check", "--insecure", url, "--key-file", next)
	assert.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "0 problems")
	_, stderr, code = pmemctl(t, "check", "--insecure", url, "--key-file", keyFile)
	assert.Equal(t, exitIO, code)
	assert.Contains(t, stderr, "key id")
}
