package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/filetest"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"4096", 4096}, {"64K", 64 << 10}, {"64k", 64 << 10}, {"64M", 64 << 20}, {"1G", 1 << 30},
		{"1GiB", 1 << 30}, {"1gb", 1 << 30}, {"2T", 2 << 40}, {"1.5G", 3 << 29}, {"512B", 512}, {" 8M ", 8 << 20},
	} {
		got, err := parseSize(tc.in)
		if assert.NoError(t, err, tc.in) {
			assert.Equal(t, tc.want, got, tc.in)
		}
	}
	for _, in := range []string{"", "G", "-1G", "1X", "0x10", "1e9", "1.3B", "nan", "inf", "18446744073709551616", "16777216T"} {
		_, err := parseSize(in)
		assert.Error(t, err, in)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 64 << 20: "64 MiB", 3 << 29: "1.5 GiB"} {
		assert.Equal(t, want, humanBytes(n))
	}
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.pool")
	out, _, code := pmemctl(t, "create", path, "--size", "8M")
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "8 MiB, 118 slabs of 64 KiB")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.EqualValues(t, 8<<20, fi.Size())
	out, _, code = pmemctl(t, "check", path)
	assert.Equal(t, exitOK, code)
	assert.Contains(t, out, "0 problems, 0 objects")
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "golden.pool", false)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"create without size", []string{"create", filepath.Join(dir, "a.pool")}, "--size is required"},
		{"create bad size", []string{"create", filepath.Join(dir, "a.pool"), "--size", "big"}, "invalid size"},
		{"create too small", []string{"create", filepath.Join(dir, "a.pool"), "--size", "64K"}, "below the minimum"},
		{"create bad slab size", []string{"create", filepath.Join(dir, "a.pool"), "--size", "8M", "--slab-size", "5K"}, "slab size"},
		{"create existing", []string{"create", g.path, "--size", "8M"}, "exists"},
		{"recover without output", []string{"recover", g.path}, "--output is required"},
		{"gc without output", []string{"gc", g.path}, "--output is required"},
		{"info without pool", []string{"info"}, "accepts 1 arg"},
		{"stats with two pools", []string{"stats", g.path, g.path}, "accepts 1 arg"},
		{"dump unknown type", []string{"dump", g.path, "--type", "Nope"}, `no type "Nope"`},
		{"dump bad id", []string{"dump", g.path, "--object", "a:b"}, "two numbers"},
		{"dump bad offset", []string{"dump", g.path, "--object", "zz"}, "neither an ID"},
		{"dump free object", []string{"dump", g.path, "--object", "1:3"}, "no allocated object 1:3"},
		{"dump metadata offset", []string{"dump", g.path, "--object", "4096"}, "no allocated object holds pool offset 4096"},
		{"unknown flag", []string{"types", "--frobnicate", g.path}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := pmemctl(t, tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, stderr, tc.want)
			assert.Contains(t, stderr, "--help")
		})
	}
	_, err := os.Stat(filepath.Join(dir, "a.pool"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestJSONParses runs every command that prints JSON, on clean, leaky and
// damaged pools, and decodes the output.
func TestJSONParses(t *testing.T) {
	dir := t.TempDir()
	clean := newGoldenPool(t, dir, "clean.pool", false).path
	leaky := newGoldenPool(t, dir, "leaky.pool", true).path
	damaged := newGoldenPool(t, dir, "damaged.pool", false)
	filetest.FlipByte(t, damaged.path, 100)
	n := 0
	for _, pool := range []string{clean, leaky, damaged.path} {
		for _, args := range [][]string{
			{"info", "--json"}, {"types", "--json"}, {"stats", "--json"}, {"check", "--json"},
			{"check", "--json", "--leaks"}, {"dump"}, {"dump", "--json", "--hex"}, {"dump", "--type", "uint8"},
			{"recover", "--json", "--output"}, {"gc", "--json", "--output"},
		} {
			if args[len(args)-1] == "--output" {
				n++
				args = append(args, filepath.Join(dir, "out", filepath.Base(pool)+string(rune('a'+n))))
			}
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "out"), 0o755))
			out, stderr, code := pmemctl(t, append([]string{args[0], pool}, args[1:]...)...)
			if code == exitIO {
				assert.Empty(t, out, "%v on %s", args, pool)
				assert.NotEmpty(t, stderr)
				continue
			}
			var v any
			assert.NoError(t, json.Unmarshal([]byte(out), &v), "%v on %s:\n%s", args, pool, out)
		}
	}
}

// TestProgressOnlyOnTerminal checks that progress bars go to standard
// error, only when standard output is a terminal and not JSON, and leave
// the output as it is.
func TestProgressOnlyOnTerminal(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "leaky.pool", true)
	plain, stderr, _ := pmemctl(t, "check", "--leaks", g.path)
	assert.NotContains(t, stderr, "walking")

	isTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { isTerminal = defaultIsTerminal })
	out, stderr, code := pmemctl(t, "check", "--leaks", g.path)
	assert.Equal(t, exitProblems, code)
	assert.Equal(t, plain, out)
	assert.Contains(t, stderr, "walking")

	_, stderr, _ = pmemctl(t, "check", "--leaks", "--json", g.path)
	assert.NotContains(t, stderr, "walking")

	_, stderr, code = pmemctl(t, "gc", g.path, "--output", filepath.Join(dir, "gc.pool"))
	assert.Equal(t, exitOK, code)
	assert.Contains(t, stderr, "copying")
	assert.Contains(t, stderr, "freeing")
}

// TestDumpNonFiniteFloats dumps a pool whose floats are NaN and infinite,
// whole and by object: the output is still JSON (which has no such
// numbers), with those values as strings.
func TestDumpNonFiniteFloats(t *testing.T) {
	g := newGoldenPool(t, t.TempDir(), "golden.pool", false)
	h, err := heap.Open(g.path, nil)
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[goldenRoot](tx)
		if err != nil {
			return err
		}
		if err := heap.Add(tx, root); err != nil {
			return err
		}
		root.Ratio, root.In.Y = math.NaN(), float32(math.Inf(-1))
		return nil
	}))
	require.NoError(t, h.Close())
	for _, args := range [][]string{{"dump", g.path}, {"dump", g.path, "--object", fmt.Sprint(g.root)}} {
		out, stderr, code := pmemctl(t, args...)
		require.Equal(t, exitOK, code, stderr)
		var v any
		require.NoError(t, json.Unmarshal([]byte(out), &v), "%v:\n%s", args, out)
		assert.Contains(t, out, `"NaN"`)
		assert.Contains(t, out, `"-Inf"`)
	}
}
