package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/filetest"
	"github.com/pmemgo/pmemgo/recovery"
)

// cleanPool builds a small demo graph in a new pool with the heap API and
// returns its path and the number of objects and arrays it holds.
func cleanPool(t *testing.T) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clean.pool")
	h, err := heap.Open(path, &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	_, err = fillDemo(h, newDemoPlan(200))
	require.NoError(t, err)
	objects := 0
	for _, ts := range h.Stats().Types {
		objects += ts.Objects
	}
	require.NoError(t, h.Close())
	return path, objects
}

// firstSlabOff returns the file offset of slab 0, from the pool's header.
func firstSlabOff(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h, err := recovery.ReadHeader(f)
	require.NoError(t, err)
	return int64(h.SlabOffset(0))
}

func TestCheckClean(t *testing.T) {
	path, objects := cleanPool(t)
	out, stderr, code := pmemctl(t, "check", path)
	assert.Equal(t, exitOK, code)
	assert.Empty(t, stderr)
	assert.Contains(t, out, path+": 0 problems")
	assert.Contains(t, out, fmt.Sprintf("%d objects", objects))
}

func TestCheckCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name string
		// off returns the offset of the byte to flip.
		off func(t *testing.T, path string) int64
		// want is in the line of the problem.
		want string
	}{
		{"heap state", func(*testing.T, string) int64 { return 8192 + 20 }, "heap state"},
		// Byte 20 of a slab header is its used count, under the checksum.
		{"slab header", func(t *testing.T, path string) int64 { return firstSlabOff(t, path) + 20 }, "slab 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := cleanPool(t)
			filetest.FlipByte(t, path, tc.off(t, path))
			out, stderr, code := pmemctl(t, "check", path)
			assert.Equal(t, exitProblems, code)
			assert.Contains(t, out, tc.want)
			assert.NotContains(t, out, ": 0 problems")
			assert.Contains(t, stderr, "found")
		})
	}
}

// TestCheckProgressBar checks that check draws a bar of the slabs it goes
// through on standard error when standard output is a terminal, and
// nothing when it is not or the output is JSON; the output is the same
// either way.
func TestCheckProgressBar(t *testing.T) {
	path, _ := cleanPool(t)
	info, err := recovery.Inspect(path)
	require.NoError(t, err)
	// A bar with its total ends its count so; the spinner drawn until
	// the checker knows the total shows "(0/-)".
	slabs := fmt.Sprintf("/%d)", info.State.SlabHigh)
	for _, tc := range []struct {
		name     string
		args     []string
		terminal bool
		// want is in the progress drawn, none when empty.
		want []string
	}{
		{"terminal", []string{"check", path}, true, []string{"checking slabs", slabs}},
		{"terminal with leaks", []string{"check", "--leaks", path}, true, []string{"checking slabs", slabs, "walking"}},
		{"terminal with JSON", []string{"check", "--json", "--leaks", path}, true, nil},
		{"not a terminal", []string{"check", "--leaks", path}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, _, _ := pmemctl(t, tc.args...)
			isTerminal = func(io.Writer) bool { return tc.terminal }
			t.Cleanup(func() { isTerminal = defaultIsTerminal })
			out, stderr, code := pmemctl(t, tc.args...)
			assert.Equal(t, exitOK, code)
			assert.Equal(t, plain, out, "the progress changed the output")
			if len(tc.want) == 0 {
				assert.Empty(t, stderr)
			}
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
		})
	}
}

func TestCheckNotAPool(t *testing.T) {
	random := filepath.Join(t.TempDir(), "random.bin")
	b := make([]byte, 1<<20)
	_, _ = rand.Read(b)
	require.NoError(t, os.WriteFile(random, b, 0o644))

	for _, tc := range []struct {
		name, path, want string
	}{
		{"random bytes", random, "not a pool"},
		{"missing file", filepath.Join(t.TempDir(), "missing.pool"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := pmemctl(t, "check", tc.path)
			assert.Equal(t, exitIO, code)
			assert.Empty(t, out)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

func TestCheckUsage(t *testing.T) {
	_, stderr, code := pmemctl(t, "check")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "accepts 1 arg")
}
