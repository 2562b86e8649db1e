package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the commands' output")

var (
	// uuidRE and addrRE match what changes from one pool to the next: the
	// UUID and the base address (a mapping address of 10 to 12 hex
	// digits; layout hashes are printed with 16).
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	addrRE = regexp.MustCompile(`0x[0-9a-f]{10,12}\b`)
)

// mask replaces the UUID and the base addresses in out, and reports the
// copy that recover and gc open as not relocated: whether it lands at its
// recorded base depends on what this test process happened to map there
// since, where a pmemctl process of its own would find the range free.
func mask(out string) string {
	out = addrRE.ReplaceAllString(uuidRE.ReplaceAllString(out, "UUID"), "0xBASE")
	for _, r := range relocationRE {
		out = r.re.ReplaceAllString(out, r.with)
	}
	return out
}

var relocationRE = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"relocated": true`), `"relocated": false`},
	{regexp.MustCompile(`"(pointers|slabs)_rewritten": \d+`), `"${1}_rewritten": 0`},
	{regexp.MustCompile(`mapped at a new base: [^\n]* rewritten`), `none needed`},
	{regexp.MustCompile(`(?m)^  recovery +0 undo-log entries rolled back, relocated: true\n`), ``},
}

// assertGolden compares out with testdata/name.golden, or rewrites the
// file with -update.
func assertGolden(t *testing.T, name, out string) {
	t.Helper()
	path := filepath.Join(testdataDir, name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(out), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create the golden files")
	assert.Equal(t, string(want), out, "output differs from %s (go test -update rewrites it)", path)
}

// testdataDir is the absolute path of testdata, taken before the tests
// change directory.
var testdataDir = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "testdata")
}()

// TestGolden runs each command on the golden pools, in their directory so
// that the output names them without a temporary path, and compares its
// output with a golden file. JSON output must also parse.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"create", []string{"create", "new.pool", "--size", "2M", "--slab-size", "16K", "--max-size", "64M"}, exitOK},
		{"info", []string{"info", "golden.pool"}, exitOK},
		{"info_json", []string{"info", "--json", "golden.pool"}, exitOK},
		{"types", []string{"types", "golden.pool"}, exitOK},
		{"types_json", []string{"types", "--json", "golden.pool"}, exitOK},
		{"stats", []string{"stats", "golden.pool"}, exitOK},
		{"stats_json", []string{"stats", "--json", "golden.pool"}, exitOK},
		{"check", []string{"check", "golden.pool"}, exitOK},
		{"check_json", []string{"check", "--json", "--leaks", "golden.pool"}, exitOK},
		{"check_leaks", []string{"check", "--leaks", "leaky.pool"}, exitProblems},
		{"check_leaks_json", []string{"check", "--leaks", "--json", "leaky.pool"}, exitProblems},
		{"dump", []string{"dump", "golden.pool"}, exitOK},
		{"dump_type", []string{"dump", "golden.pool", "--type", "goldenNode"}, exitOK},
		{"dump_object", []string{"dump", "golden.pool", "--object", "1:2"}, exitOK},
		{"dump_hex", []string{"dump", "golden.pool", "--type", "uint32", "--hex"}, exitOK},
		{"recover", []string{"recover", "golden.pool", "--output", "recovered.pool"}, exitOK},
		{"recover_json", []string{"recover", "golden.pool", "--output", "recovered.pool", "--json"}, exitOK},
		{"gc", []string{"gc", "leaky.pool", "--output", "collected.pool"}, exitOK},
		{"gc_json", []string{"gc", "leaky.pool", "--output", "collected.pool", "--json"}, exitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			newGoldenPool(t, dir, "golden.pool", false)
			newGoldenPool(t, dir, "leaky.pool", true)
			t.Chdir(dir)
			out, stderr, code := pmemctl(t, tc.args...)
			require.Equal(t, tc.code, code, stderr)
			if strings.HasSuffix(tc.name, "_json") || tc.args[0] == "dump" {
				assert.True(t, json.Valid([]byte(out)), "output is not JSON:\n%s", out)
			}
			assertGolden(t, tc.name, mask(out))
		})
	}
}
