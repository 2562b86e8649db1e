package remote

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkDemandUnderFlood measures the latency of demand reads while
// other clients flood the node with write-backs, with the two queues and
// with one FIFO queue, side by side. The node's workers are limited to
// the default four. With priorities a write-back occupies at most one of
// them (write-backs are applied one at a time, in order), so a demand read
// finds a free worker; in one FIFO queue it waits behind every write-back
// that arrived before it.
func BenchmarkDemandUnderFlood(b *testing.B) {
	var p99 [2]float64
	for i, fifo := range []bool{false, true} {
		name := "priority"
		if fifo {
			name = "fifo"
		}
		b.Run(name, func(b *testing.B) {
			p99[i] = benchFlood(b, fifo)
		})
	}
	if p99[0] > 0 && p99[1] > 0 {
		b.Logf("demand-read p99: priority %.0f us, fifo %.0f us, %.1fx lower with priorities", p99[0], p99[1], p99[1]/p99[0])
	}
}

// startNodeProcess runs a node in a process of its own
// (the test binary in its node role, see main_test.go), so that the
// flooding clients do not compete with it for this process's scheduler.
func startNodeProcess(b *testing.B, fifo bool) string {
	cmd := exec.Command(os.Args[0], "-test.run=^$", b.TempDir(), "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "REMOTE_TEST_ROLE=node")
	if fifo {
		cmd.Env = append(cmd.Env, "REMOTE_TEST_FIFO=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func benchFlood(b *testing.B, fifo bool) float64 {
	addr := startNodeProcess(b, fifo)
	ctx := context.Background()
	writer, err := dial(ctx, addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer writer.close()
	const size = 64 << 20
	r, epoch, err := writer.create(ctx, "flood", size)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := writer.resolve(ctx, "flood", true, WriterID{1}); err != nil {
		b.Fatal(err)
	}
	// Every page of the region is written once first, so that the flood
	// measures write-backs, not the node's first touch of its memory.
	zero := make([]byte, MaxRead)
	for off := uint64(0); off < size; off += MaxRead {
		if err := writer.write(ctx, epoch, r.id, []run{{off: off, data: zero}}); err != nil {
			b.Fatal(err)
		}
	}
	reader, err := dial(ctx, addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer reader.close()

	// Eight writers keep batches of 256 scattered lines in the queue.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			line := make([]byte, LineSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				runs := make([]run, 256)
				for k := range runs {
					runs[k] = run{off: rng.Uint64N(size/LineSize) * LineSize, data: line}
				}
				if err := writer.write(ctx, epoch, r.id, runs); err != nil {
					return
				}
			}
		}()
	}
	page := make([]byte, PageSize)
	lat := make([]time.Duration, 0, b.N)
	rng := rand.New(rand.NewPCG(9, 9))
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := reader.read(ctx, epoch, r.id, rng.Uint64N(size/PageSize)*PageSize, page, prioDemand); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(float64(p50.Microseconds()), "p50-us")
	b.ReportMetric(float64(p99.Microseconds()), "p99-us")
	return float64(p99.Microseconds())
}
