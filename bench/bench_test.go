package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/bench"
)

var benchKeys = flag.Int("bench.keys", 10000, "keys in the stores of BenchmarkCompare")

// TestRunAllEngines runs every workload on every engine with a small
// store: each engine must answer every read of a key it was given, and
// the report must hold a figure for each pair.
func TestRunAllEngines(t *testing.T) {
	rep, err := bench.Run(bench.Config{Keys: 1000, Ops: 300, Rounds: 3})
	require.NoError(t, err)
	assert.Len(t, rep.Results, len(bench.Workloads())*len(bench.Engines()))
	for _, r := range rep.Results {
		if r.Skipped != "" {
			continue
		}
		assert.Positive(t, r.OpsPerSec, "%s on %s", r.Workload, r.Engine)
		assert.LessOrEqual(t, r.P50, r.P99, "%s on %s", r.Workload, r.Engine)
	}
	require.Len(t, rep.Engines, len(bench.Engines()))
	for _, e := range rep.Engines {
		if e.Engine == "go-map" || e.Engine == "google-btree" {
			assert.Zero(t, e.DiskBytes)
			continue
		}
		assert.Positive(t, e.BytesPerKey, e.Engine)
		assert.Positive(t, e.Open, e.Engine)
	}
	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	assert.Contains(t, text.String(), "updaterandom: pmemgo-btree")
	_, err = json.Marshal(rep)
	require.NoError(t, err)
}

// TestRunWarm: with Warm the reopened stores are read whole before the
// workloads, and the report says so.
func TestRunWarm(t *testing.T) {
	rep, err := bench.Run(bench.Config{Keys: 500, Ops: 200, Rounds: 2, Warm: true,
		Engines: []string{"pmemgo-btree", "bbolt"}, Workloads: []string{"readrandom"}})
	require.NoError(t, err)
	require.True(t, rep.Warm)
	require.Len(t, rep.Results, 2)
	for _, r := range rep.Results {
		assert.Positive(t, r.OpsPerSec, r.Engine)
	}
	var text strings.Builder
	require.NoError(t, rep.WriteText(&text))
	assert.Contains(t, text.String(), "(--warm)")
}

func TestRunRefusesUnknownNames(t *testing.T) {
	tests := []struct {
		name string
		cfg  bench.Config
		want string
	}{
		{"engine", bench.Config{Keys: 10, Engines: []string{"sqlite"}}, `no engine "sqlite"`},
		{"workload", bench.Config{Keys: 10, Workloads: []string{"ycsb-z"}}, `no workload "ycsb-z"`},
		{"keys", bench.Config{Keys: 0}, "0 keys"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bench.Run(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// BenchmarkCompare runs each workload on each engine, interleaved, as
// pmemctl bench does, with -bench.keys keys, and reports every figure as
// a metric of the sub-benchmark workload/engine. b.N is ignored beyond
// the first run: the figures come from one interleaved run.
func BenchmarkCompare(b *testing.B) {
	rep, err := bench.Run(bench.Config{Keys: *benchKeys})
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Skipped != "" {
			continue
		}
		b.Run(fmt.Sprintf("%s/%s", r.Workload, r.Engine), func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.OpsPerSec, "ops/s")
			b.ReportMetric(float64(r.P50)/float64(time.Microsecond), "p50-us")
			b.ReportMetric(float64(r.P99)/float64(time.Microsecond), "p99-us")
		})
	}
	for _, e := range rep.Engines {
		if e.DiskBytes == 0 {
			continue
		}
		b.Run("store/"+e.Engine, func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(e.BytesPerKey, "bytes/key")
			b.ReportMetric(float64(e.Open)/float64(time.Millisecond), "open-ms")
			b.ReportMetric(float64(e.RSS)/(1<<20), "rss-MiB")
		})
	}
}

// TestRunStops cancels a run while it fills its stores: Run returns the
// cause and leaves nothing in its directory (an interrupted run used to
// leave its stores behind, in /dev/shm by default).
func TestRunStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stop := errors.New("stopped by the test")
	go func() {
		for {
			if m, _ := filepath.Glob(filepath.Join(dir, "pmemgo-bench-*", "main", "*")); len(m) > 0 {
				cancel(stop)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := bench.Run(bench.Config{Keys: 1_000_000, Rounds: 100, Dir: dir, Context: ctx,
		Engines: []string{"pmemgo-btree", "bbolt"}, Workloads: []string{"readrandom"}})
	require.ErrorIs(t, err, stop)
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, left, "what the stopped run left")
}
