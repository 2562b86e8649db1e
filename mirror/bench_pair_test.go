package mirror_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// The interleaved sub-benchmarks measure what one feature costs against
// the same set-up without it, in one loop: two pools, each mirrored to its
// own replica server, take turns, so that both see the same state of a
// shared machine. The TLS pair runs one mirror over mutual TLS and one over
// plain TCP; the sealed pair runs a sealed and a plain pool, both over
// mutual TLS.

// pairSide is how one pool of an interleaved pair is set up.
type pairSide struct {
	name  string
	key   []byte // the pool key, nil for a plain pool
	plain bool   // plain TCP instead of mutual TLS
	keep  int64  // Options.KeepBytes
}

// interleaved is a pair: [0] has the feature, [1] not; added names what
// [0] adds in the reported metrics.
type interleaved struct {
	sides [2]pairSide
	added string
}

var (
	benchPoolKey = bytes.Repeat([]byte{0x42}, 32)
	tlsPair      = interleaved{sides: [2]pairSide{{name: "tls"}, {name: "plain", plain: true}}, added: "tls"}
	sealedPair   = interleaved{sides: [2]pairSide{{name: "sealed", key: benchPoolKey}, {name: "plain"}}, added: "key"}
	// keepPair reads async batches in the sender, keeping old lines, on
	// one side, and at their commit boundary on the other.
	keepPair = interleaved{sides: [2]pairSide{{name: "keep", keep: 16 << 20}, {name: "at-commit"}}, added: "keep"}
)

// open opens the pair's pools, each mirrored in mode to its own replica
// server. prepare runs on each pool before its mirror starts.
func (p interleaved) open(b *testing.B, hopts heap.Options, mode mirror.Mode, prepare func(*heap.Heap)) (hs [2]*heap.Heap, ms [2]*mirror.Mirror) {
	for k, side := range p.sides {
		_, addr := startServerWith(b, secureServer(b, mirror.ServerOptions{Dir: fastDir(b), Insecure: side.plain}))
		o := hopts
		o.Key = side.key
		h, err := heap.Open(filepath.Join(fastDir(b), "p.pool"), &o)
		bcheck(b, err)
		b.Cleanup(func() { h.Close() })
		prepare(h)
		m, err := mirror.Start(h, secure(b, mirror.Options{Replicas: []string{addr}, Mode: mode, Insecure: side.plain, KeepBytes: side.keep}))
		bcheck(b, err)
		bcheck(b, m.Flush(context.Background()))
		hs[k], ms[k] = h, m
	}
	return hs, ms
}

// benchSync alternates small sync commits between the two pools and
// reports each one's p50 and what the feature adds to it. Target: under
// 1 us added.
func (p interleaved) benchSync(b *testing.B) {
	update := func(tx *heap.Tx) error {
		c, err := heap.Root[benchCounter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, c.N+1)
	}
	hs, _ := p.open(b, heap.Options{Size: 8 << 20}, mirror.Sync, func(*heap.Heap) {})
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
	with, without := percentile(lat[0], 0.5), percentile(lat[1], 0.5)
	b.ReportMetric(float64(with.Nanoseconds()), p.sides[0].name+"-p50-ns")
	b.ReportMetric(float64(without.Nanoseconds()), p.sides[1].name+"-p50-ns")
	b.ReportMetric(float64((with - without).Nanoseconds()), p.added+"-added-p50-ns")
}

// benchAsync runs rounds of 16 commits of 256 KiB, each round flushed, on
// the two pools in turn, and reports each one's rate of plaintext written
// back and replicated, and their ratio. Target: at least 0.85.
func (p interleaved) benchAsync(b *testing.B) {
	hs, ms := p.open(b, heap.Options{Size: 64 << 20, LogSize: 4 << 20}, mirror.Async, func(h *heap.Heap) { fillChunks(b, h) })
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
	a, c := p.sides[0].name, p.sides[1].name
	b.ReportMetric(rate[0], a+"-MB/s")
	b.ReportMetric(rate[1], c+"-MB/s")
	b.ReportMetric(rate[0]/rate[1], a+"/"+c)
	// The processor time per MB, of primary and server together, is what
	// the feature costs whatever else runs on the machine.
	b.ReportMetric(cost[0], a+"-cpu-us/MB")
	b.ReportMetric(cost[1], c+"-cpu-us/MB")
}

// cpuTime returns the processor time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	bcheck(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// smallRoot holds the accounts of the small-commit workload.
type smallRoot struct {
	Accounts []benchCounter
}

// smallAccounts is how many 64-byte accounts the small-commit workload
// updates: 256 KiB of them.
const smallAccounts = 4096

// benchAsyncSmall alternates bursts of 256 small commits (one 8-byte field
// of a random account each) between the two pools, each streaming to its
// replica in async mode, and reports each one's commits per second and
// their ratio.
func (p interleaved) benchAsyncSmall(b *testing.B) {
	hs, ms := p.open(b, heap.Options{Size: 16 << 20}, mirror.Async, func(h *heap.Heap) {
		bcheck(b, h.Update(func(tx *heap.Tx) error {
			r, err := heap.Root[smallRoot](tx)
			if err != nil {
				return err
			}
			if err := heap.Add(tx, r); err != nil {
				return err
			}
			r.Accounts, err = heap.MakeSlice[benchCounter](tx, smallAccounts, smallAccounts)
			return err
		}))
	})
	var accts [2][]benchCounter
	for k, h := range hs {
		bcheck(b, h.View(func(tx *heap.Tx) error {
			r, err := heap.Root[smallRoot](tx)
			accts[k] = r.Accounts
			return err
		}))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var elapsed [2]time.Duration
	var commits [2]int
	b.ResetTimer()
	for b.Loop() {
		for k, h := range hs {
			t0 := time.Now()
			for range 256 {
				a := &accts[k][rng.IntN(smallAccounts)]
				bcheck(b, h.Update(func(tx *heap.Tx) error { return heap.Set(tx, &a.N, a.N+1) }))
			}
			elapsed[k] += time.Since(t0)
			commits[k] += 256
		}
	}
	b.StopTimer()
	for _, m := range ms {
		bcheck(b, m.Flush(context.Background()))
	}
	var rate [2]float64
	for k := range rate {
		rate[k] = float64(commits[k]) / elapsed[k].Seconds()
	}
	a, c := p.sides[0].name, p.sides[1].name
	b.ReportMetric(rate[0], a+"-tx/s")
	b.ReportMetric(rate[1], c+"-tx/s")
	b.ReportMetric(rate[0]/rate[1], a+"/"+c)
}
