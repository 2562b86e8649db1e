package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	out, _, code := pmemctl(t, "demo", "--nodes", "300", "--dir", dir)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "300 people")
	assert.Contains(t, out, "swizzled")
	assert.Contains(t, out, "verified")
	assert.NotContains(t, out, "MISMATCH")

	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, left, "demo without --keep leaves its pool behind")
}

func TestDemoKeep(t *testing.T) {
	dir := t.TempDir()
	_, _, code := pmemctl(t, "demo", "--nodes", "20", "--dir", dir, "--keep")
	require.Equal(t, exitOK, code)
	pools, err := filepath.Glob(filepath.Join(dir, "*", "demo.pool"))
	require.NoError(t, err)
	assert.Len(t, pools, 1)
}

func TestDemoUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"zero nodes", []string{"demo", "--nodes", "0"}},
		{"bad flag value", []string{"demo", "--nodes", "many"}},
		{"unknown flag", []string{"demo", "--frobnicate"}},
		{"argument", []string{"demo", "extra"}},
		{"unknown command", []string{"frobnicate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := pmemctl(t, tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, "--help")
		})
	}
}

func TestDemoVerifyMismatch(t *testing.T) {
	dir := t.TempDir()
	_, _, code := pmemctl(t, "demo", "--nodes", "50", "--dir", dir, "--keep")
	require.Equal(t, exitOK, code)
	pools, err := filepath.Glob(filepath.Join(dir, "*", "demo.pool"))
	require.NoError(t, err)
	require.Len(t, pools, 1)

	// A pool built for 50 people does not match the plan for 51.
	out, stderr, code := pmemctl(t, "demo-verify", "--pool", pools[0], "--nodes", "51")
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, "MISMATCH")
	assert.Contains(t, stderr, "mismatches")
}
