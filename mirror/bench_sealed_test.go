package mirror_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// The sealed-interleaved sub-benchmarks measure what a pool key costs,
// as the TLS ones measure TLS: two pools, [0] sealed and [1] plain, both
// mirrored over mutual TLS to replica servers of their own, take turns in
// one loop.

var benchPoolKey = bytes.Repeat([]byte{0x42}, 32)

// sealedPair opens a sealed and a plain pool, each mirrored in mode over
// mutual TLS to its own replica server. prepare runs on each pool before
// its mirror starts.
func sealedPair(b *testing.B, hopts heap.Options, mode mirror.Mode, prepare func(*heap.Heap)) (hs [2]*heap.Heap, ms [2]*mirror.Mirror) {
	for k, key := range [][]byte{benchPoolKey, nil} {
		_, addr := startServerWith(b, secureServer(b, mirror.ServerOptions{Dir: fastDir(b)}))
		o := hopts
		o.Key = key
		h, err := heap.Open(filepath.Join(fastDir(b), "p.pool"), &o)
		bcheck(b, err)
		b.Cleanup(func() { h.Close() })
		prepare(h)
		m, err := mirror.Start(h, secure(b, mirror.Options{Replicas: []string{addr}, Mode: mode}))
		bcheck(b, err)
		bcheck(b, m.Flush(context.Background()))
		hs[k], ms[k] = h, m
	}
	return hs, ms
}

// benchSyncSealed alternates small sync commits between a sealed and a
// plain pool and reports each one's p50 and what the key adds to it.
// Target: under 1 us added.
func benchSyncSealed(b *testing.B) {
	update := func(tx *heap.Tx) error {
		c, err := heap.Root[benchCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, c.N+1)
	}
	hs, _ := sealedPair(b, heap.Options{Size: 8 << 20}, mirror.Sync, func(*heap.Heap) {})
	for range 100 {
		for _, h := range hs {
			bcheck(b, h.Update(update))
		}
	}
	var lat [2][]time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := i % 2
		t0 := time.Now()
		if err := hs[k].Update(update); err != nil {
			b.Fatal(err)
		}
		lat[k] = append(lat[k], time.Since(t0))
	}
	b.StopTimer()
	if len(lat[1]) == 0 {
		return
	}
	sealedP50, plainP50 := percentile(lat[0], 0.5), percentile(lat[1], 0.5)
	b.ReportMetric(float64(sealedP50.Nanoseconds()), "sealed-p50-ns")
	b.ReportMetric(float64(plainP50.Nanoseconds()), "plain-p50-ns")
	b.ReportMetric(float64((sealedP50 - plainP50).Nanoseconds()), "key-added-p50-ns")
}

// benchAsyncSealed runs rounds of 16 commits of 256 KiB, each round
// flushed, on a sealed and a plain pool in turn, and reports each one's
// rate of plaintext written back and replicated, and their ratio. Target:
// sealed/plain at least 0.85.
func benchAsyncSealed(b *testing.B) {
	hs, ms := sealedPair(b, heap.Options{Size: 64 << 20, LogSize: 4 << 20}, mirror.Async, func(h *heap.Heap) { fillChunks(b, h) })
	var wb [2]writeBackCounter
	for k, h := range hs {
		defer h.Device().Subscribe(&wb[k])()
	}
	var elapsed, cpu [2]time.Duration
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for k := range hs {
			t0, c0 := time.Now(), cpuTime(b)
			for j := range 16 {
				bcheck(b, hs[k].Update(writeChunk(16*i+j)))
			}
			bcheck(b, ms[k].Flush(ctx))
			elapsed[k] += time.Since(t0)
			cpu[k] += cpuTime(b) - c0
		}
	}
	b.StopTimer()
	var rate, cost [2]float64
	for k := range rate {
		mb := float64(wb[k].bytes.Load()) / 1e6
		rate[k] = mb / elapsed[k].Seconds()
		cost[k] = float64(cpu[k].Microseconds()) / mb
	}
	b.ReportMetric(rate[0], "sealed-MB/s")
	b.ReportMetric(rate[1], "plain-MB/s")
	b.ReportMetric(rate[0]/rate[1], "sealed/plain")
	b.ReportMetric(cost[0], "sealed-cpu-us/MB")
	b.ReportMetric(cost[1], "plain-cpu-us/MB")
}
