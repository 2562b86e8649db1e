package crashtest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/crashtest"
	"github.com/pmemgo/pmemgo/heap"
)

// BenchmarkImages measures crash images checked per second (building and
// checking them; recording the workload is not counted). An image is
// built from the previous one by writing the lines that differ, so the
// pool size should matter little.
func BenchmarkImages(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20} {
		for _, mode := range []struct {
			name  string
			lines crashtest.LineMode
		}{{"durable", crashtest.LinesNone}, {"single-lines", crashtest.LinesSingle}} {
			b.Run(fmt.Sprintf("pool=%dMiB/%s", size>>20, mode.name), func(b *testing.B) {
				w := listWorkload(push)
				w.Size = size
				var images int
				var elapsed time.Duration
				for b.Loop() {
					sum := crashtest.Run(b, w, &crashtest.Options{Lines: mode.lines, Logf: func(string, ...any) {}})
					if len(sum.Failures) > 0 {
						b.Fatal(sum.Failures[0].Err)
					}
					images += sum.Images
					elapsed += sum.Checking
				}
				b.ReportMetric(float64(images)/elapsed.Seconds(), "images/s")
				b.ReportMetric(float64(images)/float64(b.N), "images/run")
			})
		}
	}
}

var _ = heap.Open
