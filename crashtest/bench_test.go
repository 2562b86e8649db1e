package crashtest_test

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/crashtest"
)

// cpuTime returns the user and system time the process used so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkImages measures distinct crash images checked per second:
// each built, checked by the offline checker, recovered at a new base
// (so swizzled), walked for leaks and checked by the workload. Recording
// the workload is not counted. An image is built from the previous one by
// writing the lines that differ, so the pool size should matter little.
//
//	go test ./crashtest -run '^$' -bench Images -benchtime 5x
func BenchmarkImages(b *testing.B) {
	for _, size := range []int64{2 << 20, 64 << 20} {
		for _, mode := range []struct {
			name    string
			lines   crashtest.LineMode
			workers int
		}{
			{"durable", crashtest.LinesNone, 1}, {"single-lines", crashtest.LinesSingle, 1},
			{"auto", crashtest.LinesAuto, 1}, {"auto/workers=2", crashtest.LinesAuto, 2},
		} {
			b.Run(fmt.Sprintf("pool=%dMiB/%s", size>>20, mode.name), func(b *testing.B) {
				b.ReportAllocs()
				w := listWorkload(push)
				w.Size = size
				var images int
				var elapsed time.Duration
				cpu0 := cpuTime()
				for b.Loop() {
					sum := crashtest.Run(b, w, &crashtest.Options{Lines: mode.lines, Workers: mode.workers, Logf: func(string, ...any) {}})
					if len(sum.Failures) > 0 {
						b.Fatal(sum.Failures[0].Err)
					}
					images += sum.Images
					elapsed += sum.Checking
				}
				b.ReportMetric(float64(images)/elapsed.Seconds(), "images/s")
				// On a shared machine the wall clock counts other processes'
				// time; this counts the process's own, recording included.
				b.ReportMetric(float64(images)/(cpuTime()-cpu0).Seconds(), "images/cpu-s")
				b.ReportMetric(float64(images)/float64(b.N), "images/run")
			})
		}
	}
}
