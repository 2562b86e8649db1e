package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
)

func TestBackup(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "golden.pool", false)
	dst := filepath.Join(dir, "backup.pool")
	out, stderr, code := pmemctl(t, "backup", g.path, dst)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "backed up "+g.path+" to "+dst)
	assert.Contains(t, out, dst+": 0 problems")

	// The backup holds what the pool holds, and the pool was not written.
	a, err := heap.Open(g.path, &heap.Options{ReadOnly: true})
	require.NoError(t, err)
	b, err := heap.Open(dst, &heap.Options{ReadOnly: true})
	require.NoError(t, err)
	assert.Equal(t, a.Stats().Types, b.Stats().Types)
	require.NoError(t, errors.Join(a.Close(), b.Close()))

	_, _, code = pmemctl(t, "backup", g.path, dst)
	assert.Equal(t, exitUsage, code, "an existing output is refused")

	out, _, code = pmemctl(t, "backup", "--json", g.path, filepath.Join(dir, "b2.pool"))
	require.Equal(t, exitOK, code)
	var r backupResult
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	fi, err := os.Stat(g.path)
	require.NoError(t, err)
	assert.Equal(t, fi.Size(), r.Bytes)
	assert.Empty(t, r.Check.Problems)

	_, _, code = pmemctl(t, "backup", filepath.Join(dir, "missing.pool"), filepath.Join(dir, "b3.pool"))
	assert.Equal(t, exitIO, code)
	assert.NoFileExists(t, filepath.Join(dir, "b3.pool"))
}
