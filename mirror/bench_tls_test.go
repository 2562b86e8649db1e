package mirror_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// The interleaved sub-benchmarks measure what TLS costs against plain TCP
// in one loop: two pools, one mirrored over mutual TLS and one over plain
// TCP, each to its own replica server, take turns, so that both see the
// same state of a shared machine.

// mirroredPair opens a pool for each transport, mirrored in mode to its
// own replica server; [0] is over TLS, [1] over plain TCP. prepare runs
// on each pool before its mirror starts.
func mirroredPair(b *testing.B, hopts heap.Options, mode mirror.Mode, prepare func(*heap.Heap)) (hs [2]*heap.Heap, ms [2]*mirror.Mirror) {
	for k, plain := range []bool{false, true} {
		_, addr := startServerWith(b, secureServer(b, mirror.ServerOptions{Dir: fastDir(b), Insecure: plain}))
		o := hopts
		h, err := heap.Open(filepath.Join(fastDir(b), "p.pool"), &o)
		bcheck(b, err)
		b.Cleanup(func() { h.Close() })
		prepare(h)
		m, err := mirror.Start(h, secure(b, mirror.Options{Replicas: []string{addr}, Mode: mode, Insecure: plain}))
		bcheck(b, err)
		bcheck(b, m.Flush(context.Background()))
		hs[k], ms[k] = h, m
	}
	return hs, ms
}

// benchSyncInterleaved alternates small sync commits between the two
// pools and reports each one's p50 and what TLS adds to it.
func benchSyncInterleaved(b *testing.B) {
	update := func(tx *heap.Tx) error {
		c, err := heap.Root[benchCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, c.N+1)
	}
	hs, _ := mirroredPair(b, heap.Options{Size: 8 << 20}, mirror.Sync, func(*heap.Heap) {})
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
	tlsP50, plainP50 := percentile(lat[0], 0.5), percentile(lat[1], 0.5)
	b.ReportMetric(float64(tlsP50.Nanoseconds()), "tls-p50-ns")
	b.ReportMetric(float64(plainP50.Nanoseconds()), "plain-p50-ns")
	b.ReportMetric(float64((tlsP50 - plainP50).Nanoseconds()), "tls-added-p50-ns")
}

// benchAsyncInterleaved runs rounds of 16 commits of 256 KiB, each round
// flushed, on the two pools in turn, and reports each one's rate of data
// written back and replicated, and their ratio.
func benchAsyncInterleaved(b *testing.B) {
	hs, ms := mirroredPair(b, heap.Options{Size: 64 << 20, LogSize: 4 << 20}, mirror.Async, func(h *heap.Heap) { fillChunks(b, h) })
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
	b.ReportMetric(rate[0], "tls-MB/s")
	b.ReportMetric(rate[1], "plain-MB/s")
	b.ReportMetric(rate[0]/rate[1], "tls/plain")
	// The processor time per MB, of primary and server together, is what
	// TLS costs whatever else runs on the machine.
	b.ReportMetric(cost[0], "tls-cpu-us/MB")
	b.ReportMetric(cost[1], "plain-cpu-us/MB")
}

// cpuTime returns the processor time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	bcheck(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
