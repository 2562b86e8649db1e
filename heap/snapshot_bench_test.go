package heap_test

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/benchutil"
)

// The snapshot benchmarks measure issue 12's targets on a 1 GiB pool
// (skipped with -short):
//
//	go test -run XXX -bench 'Snapshot|Backup' -benchtime 5x ./heap/

// snapAccounts is the array the snapshot benchmarks update: 64-byte
// accounts spread over the pool.
type snapAccount struct {
	Balance int64
	Pad     [7]int64
}

type snapRoot struct {
	Accounts [][]snapAccount
}

// openSnapPool creates a pool of size bytes filled with arrays of
// accounts, and returns it with its accounts.
func openSnapPool(b *testing.B, size int64) (*heap.Heap, [][]snapAccount) {
	b.Helper()
	if testing.Short() {
		b.Skip("1 GiB pool")
	}
	path := filepath.Join(benchutil.PoolDir(b), "snap.pool")
	os.Remove(path)
	h, err := heap.Open(path, &heap.Options{Size: size, LogSize: 64 << 20})
	check(b, err)
	b.Cleanup(func() { h.Close(); os.Remove(path) })
	const perArray = 8 << 10 // 512 KiB arrays
	arrays := int(size*3/4) / (perArray * 64)
	for i := 0; i < arrays; i += 16 {
		check(b, h.Update(func(tx *heap.Tx) error {
			r, err := heap.Root[snapRoot](tx)
			if err != nil {
				return err
			}
			if err := heap.Add(tx, r); err != nil {
				return err
			}
			for j := i; j < min(i+16, arrays); j++ {
				a, err := heap.MakeSlice[snapAccount](tx, perArray, perArray)
				if err != nil {
					return err
				}
				for k := range a {
					a[k].Balance = 100
				}
				if r.Accounts, err = heap.Append(tx, r.Accounts, a); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	var accts [][]snapAccount
	check(b, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[snapRoot](tx)
		accts = r.Accounts
		return err
	}))
	return h, accts
}

// randomUpdate moves an amount between two random accounts.
func randomUpdate(h *heap.Heap, r *rand.Rand, accts [][]snapAccount) error {
	return h.Update(func(tx *heap.Tx) error {
		a := &accts[r.IntN(len(accts))][r.IntN(len(accts[0]))]
		c := &accts[r.IntN(len(accts))][r.IntN(len(accts[0]))]
		if err := heap.AddAll(tx, a, c); err != nil {
			return err
		}
		a.Balance--
		c.Balance++
		return nil
	})
}

// BenchmarkSnapshotWriter measures a writer's commits per second over the
// whole of a backup of the 1 GiB pool, against the same writer with no
// snapshot (the mean of a second just before and a second just after),
// against it with a snapshot open that nobody reads, and against it while
// the pool file is only copied, in one run. Target: under 10% slower.
func BenchmarkSnapshotWriter(b *testing.B) {
	h, accts := openSnapPool(b, 1<<30)
	dst := filepath.Join(benchutil.PoolDir(b), "snap-backup.pool")
	defer os.Remove(dst)
	r := rand.New(rand.NewPCG(1, 2))
	// lastCPU is the process's processor time per commit in the last
	// rate: a figure that other load on the machine disturbs less than the
	// rate, when only the writer runs.
	// lastFaults is the page faults per 1000 commits of the writer's own
	// thread in the last rate: the copy-on-write's cost shows there first
	// (see snapMemory).
	var lastCPU, lastFaults, lastThread float64
	// rate commits for d, or when done is not nil until it is closed,
	// and returns the commits per second.
	rate := func(d time.Duration, done <-chan struct{}) float64 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		f0, th0 := threadFaults(b), threadCPU(b)
		n, t0, c0 := 0, time.Now(), processCPU(b)
		stopped := func() bool {
			if done == nil {
				return time.Since(t0) >= d
			}
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		for !stopped() {
			check(b, randomUpdate(h, r, accts))
			n++
		}
		lastCPU = float64((processCPU(b) - c0).Nanoseconds()) / float64(max(n, 1))
		lastFaults = float64(threadFaults(b)-f0) * 1000 / float64(max(n, 1))
		lastThread = float64((threadCPU(b) - th0).Nanoseconds()) / float64(max(n, 1))
		return float64(n) / time.Since(t0).Seconds()
	}
	// during runs one copy in the background and returns the writer's
	// rate over exactly its duration, so that the figure covers a whole
	// copy (a backup alternates copying and yielding); lastCopy is how
	// long the copy took (a backup yields to the writer, so it takes
	// longer than alone).
	var lastCopy time.Duration
	during := func(copy func() error) float64 {
		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			t0 := time.Now()
			err = copy()
			lastCopy = time.Since(t0)
		}()
		r := rate(0, done)
		check(b, err)
		return r
	}
	// open is the writer's rate with a snapshot open that nobody reads:
	// what the copy-on-write costs it, without a copy competing for the
	// machine.
	open := func() float64 {
		s, err := h.Snapshot(nil)
		check(b, err)
		defer s.Close()
		return rate(time.Second, nil)
	}
	var backupTime time.Duration
	var plain, opened, backup, copied, cpuAlone, cpuOpen, faultsAlone, faultsOpen, faultsBackup float64
	var thAlone, thOpen, thBackup float64
	// Each round's ratios, against the writer alone in the seconds just
	// before and just after, so that a drift of the machine's speed
	// cancels out; the medians over the rounds are the figures least
	// moved by a round the machine disturbed.
	var ratios, ratiosOpen, ratiosCopy []float64
	alone := func() float64 {
		r := rate(time.Second, nil)
		cpuAlone, faultsAlone, thAlone = cpuAlone+lastCPU, faultsAlone+lastFaults, thAlone+lastThread
		return r
	}
	for b.Loop() {
		a0 := alone()
		rb := during(func() error { return h.Backup(dst) })
		faultsBackup, thBackup = faultsBackup+lastFaults, thBackup+lastThread
		backupTime += lastCopy
		a1 := alone()
		ro := open()
		cpuOpen, faultsOpen, thOpen = cpuOpen+lastCPU, faultsOpen+lastFaults, thOpen+lastThread
		a2 := alone()
		// The same writer while the pool file is merely copied, as cp
		// would: what the machine's cores and memory bandwidth leave to a
		// writer with a copy going on, without any snapshot.
		rc := during(func() error { return copyFile(h.Path(), dst) })
		a3 := alone()
		plain += (a0 + a1 + a2 + a3) / 4
		backup, opened, copied = backup+rb, opened+ro, copied+rc
		ratios = append(ratios, rb*2/(a0+a1))
		ratiosOpen = append(ratiosOpen, ro*2/(a1+a2))
		ratiosCopy = append(ratiosCopy, rc*2/(a2+a3))
	}
	n := float64(b.N)
	b.ReportMetric(plain/n, "tx/s-alone")
	b.ReportMetric(opened/n, "tx/s-open")
	b.ReportMetric(backup/n, "tx/s-backup")
	b.ReportMetric(copied/n, "tx/s-file-copy")
	b.ReportMetric(cpuAlone/(4*n), "cpu-ns/tx-alone")
	b.ReportMetric(cpuOpen/n, "cpu-ns/tx-open")
	b.ReportMetric(thAlone/(4*n), "writer-cpu-ns/tx-alone")
	b.ReportMetric(thOpen/n, "writer-cpu-ns/tx-open")
	b.ReportMetric(thBackup/n, "writer-cpu-ns/tx-backup")
	b.ReportMetric(faultsAlone/(4*n), "writer-faults/ktx-alone")
	b.ReportMetric(faultsOpen/n, "writer-faults/ktx-open")
	b.ReportMetric(faultsBackup/n, "writer-faults/ktx-backup")
	b.ReportMetric(float64(backupTime.Milliseconds())/n, "ms/backup-busy")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(median(ratiosOpen), "ratio-open")
	b.ReportMetric(median(ratiosCopy), "ratio-file-copy")
	b.ReportMetric(slices.Min(ratios), "ratio-min")
	b.ReportMetric(slices.Max(ratios), "ratio-max")
}

// median returns the median of xs.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkSnapshotMemory measures what a snapshot keeps under random
// small updates, against what copy-on-write of 4 KiB pages would keep for
// the same writes. Target: at least 10x less.
func BenchmarkSnapshotMemory(b *testing.B) {
	h, accts := openSnapPool(b, 1<<30)
	r := rand.New(rand.NewPCG(3, 4))
	var lines, pages float64
	for b.Loop() {
		s, err := h.Snapshot(nil)
		check(b, err)
		touched := map[uintptr]bool{}
		for range 10000 {
			check(b, h.Update(func(tx *heap.Tx) error {
				a := &accts[r.IntN(len(accts))][r.IntN(len(accts[0]))]
				touched[addrOf(a)>>12] = true
				return heap.Set(tx, &a.Balance, a.Balance+1)
			}))
		}
		st := s.Stats()
		lines += float64(st.MemBytes + st.SpilledBytes)
		pages += float64(len(touched) * 4096)
		check(b, s.Close())
	}
	b.ReportMetric(lines/float64(b.N), "bytes-kept")
	b.ReportMetric(pages/float64(b.N), "bytes-4k-cow")
	b.ReportMetric(pages/lines, "x-less")
}

// BenchmarkBackupIdle measures the backup of an idle 1 GiB pool against
// copying its file, in one run. Target: within 1.2x.
func BenchmarkBackupIdle(b *testing.B) {
	h, _ := openSnapPool(b, 1<<30)
	dir := benchutil.PoolDir(b)
	dst, cp := filepath.Join(dir, "idle-backup.pool"), filepath.Join(dir, "idle-copy.pool")
	defer os.Remove(dst)
	defer os.Remove(cp)
	var backup, copyTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		check(b, h.Backup(dst))
		backup += time.Since(t0)
		t0 = time.Now()
		check(b, copyFile(h.Path(), cp))
		copyTime += time.Since(t0)
	}
	gb := float64(int64(1<<30)*int64(b.N)) / 1e9
	b.ReportMetric(gb/backup.Seconds(), "GB/s-backup")
	b.ReportMetric(gb/copyTime.Seconds(), "GB/s-copy")
	b.ReportMetric(backup.Seconds()/copyTime.Seconds(), "x-copy")
}

// copyFile copies src to dst and syncs it, as cp followed by sync would.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// processCPU returns the processor time the process has used.
// threadFaults returns the page faults the calling thread has taken.
func threadFaults(b *testing.B) int64 {
	var ru unix.Rusage
	check(b, unix.Getrusage(unix.RUSAGE_THREAD, &ru))
	return ru.Minflt + ru.Majflt
}

// threadCPU returns the processor time the calling thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	check(b, unix.Getrusage(unix.RUSAGE_THREAD, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	check(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func addrOf(a *snapAccount) uintptr { return uintptr(unsafe.Pointer(a)) }
