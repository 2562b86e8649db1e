package collections_test

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
)

// reopenChildEnv names, for a child process of BenchmarkReopenProcess,
// the pool and the map to open.
const reopenChildEnv = "PMEMGO_REOPEN_CHILD"

// BenchmarkReopenProcess opens a pool holding both maps of 1M keys in a
// new process and answers a first Get, as a restarted application does:
// unlike BenchmarkReopen, whose opens reuse memory the process already
// touched, every page the open allocates is fresh, and a fresh page costs
// a page fault. The child times its own open and Get (not its start) and
// counts its page faults; reported are medians over b.N children.
func BenchmarkReopenProcess(b *testing.B) {
	const n = 1_000_000
	h := benchMaps(b, n)
	path := h.Path()
	if err := h.Close(); err != nil {
		b.Fatal(err)
	}
	for _, which := range []string{"btree", "hash"} {
		b.Run(which, func(b *testing.B) {
			var took []time.Duration
			var faults []int64
			for b.Loop() {
				cmd := exec.Command(os.Args[0], "-test.run=^TestReopenChild$")
				cmd.Env = append(os.Environ(), reopenChildEnv+"="+which+":"+path)
				out, err := cmd.Output()
				if err != nil {
					b.Fatalf("child: %v: %s", err, out)
				}
				var ns, f int64
				line := out[strings.Index(string(out), "reopen "):]
				if _, err := fmt.Sscanf(string(line), "reopen %d %d", &ns, &f); err != nil {
					b.Fatalf("child said %q: %v", out, err)
				}
				took, faults = append(took, time.Duration(ns)), append(faults, f)
			}
			slices.Sort(took)
			slices.Sort(faults)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1e3, "ms/open+get")
			b.ReportMetric(float64(faults[len(faults)/2]), "faults/open+get")
		})
	}
}

// TestReopenChild is BenchmarkReopenProcess's child: it does nothing
// unless started by it.
func TestReopenChild(t *testing.T) {
	spec := os.Getenv(reopenChildEnv)
	if spec == "" {
		t.Skip("run by BenchmarkReopenProcess")
	}
	which, path, _ := strings.Cut(spec, ":")
	k := benchKey(1_000_000 / 2)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	h, err := heap.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = firstGet(h, which, k)
	took := time.Since(t0)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("reopen %d %d\n", took.Nanoseconds(), ru1.Minflt-ru0.Minflt)
}
