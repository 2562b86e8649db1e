package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/bench"
)

func TestBenchJSON(t *testing.T) {
	out, stderr, code := pmemctl(t, "bench", "--keys", "500", "--ops", "100", "--json",
		"--workload", "updaterandom,readrandom", "--engine", "pmemgo-btree,bbolt")
	require.Equal(t, exitOK, code, stderr)
	var rep bench.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, 500, rep.Keys)
	require.Len(t, rep.Results, 4)
	for _, r := range rep.Results {
		assert.Contains(t, []string{"pmemgo-btree", "bbolt"}, r.Engine)
		assert.Contains(t, []string{"updaterandom", "readrandom"}, r.Workload)
		assert.Positive(t, r.OpsPerSec)
	}
	require.Len(t, rep.Engines, 2)
	assert.Positive(t, rep.Engines[0].BytesPerKey)
}

func TestBenchTextAndPlot(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "bench.svg")
	out, stderr, code := pmemctl(t, "bench", "--keys", "300", "--ops", "50", "--plot", plot,
		"--workload", "updaterandom,scan100", "--engine", "pmemgo-hash,pebble", "--dir", t.TempDir())
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, out, "updaterandom")
	assert.Contains(t, out, "(not ordered)")
	assert.Contains(t, out, "updaterandom: pmemgo-hash")
	svg, err := os.ReadFile(plot)
	require.NoError(t, err)
	assert.Contains(t, string(svg), "<svg")
	assert.Contains(t, string(svg), "pmemgo-hash")
}

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown workload", []string{"--workload", "ycsb-z"}, `--workload "ycsb-z": not one of fillseq`},
		{"unknown engine", []string{"--engine", "sqlite"}, `--engine "sqlite": not one of pmemgo-btree`},
		{"no keys", []string{"--keys", "0"}, "--keys 0: must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := pmemctl(t, append([]string{"bench"}, tc.args...)...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// TestBenchInterrupted sends SIGINT to 'pmemctl bench' while it fills its
// stores: it removes them before exiting, with an error that says it was
// stopped.
func TestBenchInterrupted(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "bench", "--keys", "1000000", "--rounds", "100", "--dir", dir,
		"--engine", "pmemgo-btree,bbolt", "--workload", "readrandom")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, _ := filepath.Glob(filepath.Join(dir, "pmemgo-bench-*", "main", "*")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("bench made no stores: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	require.Error(t, err, "an interrupted bench fails")
	assert.Contains(t, stderr.String(), "stopped")
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, left, "what the interrupted bench left")
}
