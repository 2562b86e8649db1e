// Package benchutil holds helpers shared by the benchmarks: where to put
// pools, and how much memory the process holds.
package benchutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// ShmDir is where pools go when it exists: a tmpfs, so that the figures
// measure the engine and not a disk.
const ShmDir = "/dev/shm"

// PoolDir returns a fresh directory for the pools of one benchmark, in
// ShmDir when it exists and else in b.TempDir(). It is removed when the
// benchmark ends. Its name carries the process id, so that the first
// PoolDir of a process removes those that killed processes left behind:
// on a tmpfs they hold memory until the machine restarts.
func PoolDir(tb testing.TB) string {
	tb.Helper()
	if fi, err := os.Stat(ShmDir); err != nil || !fi.IsDir() {
		return tb.TempDir()
	}
	sweep.Do(func() { removeStale(ShmDir) })
	dir, err := os.MkdirTemp(ShmDir, fmt.Sprintf("%s%d-*", poolDirPrefix, os.Getpid()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// poolDirPrefix starts the name of every PoolDir, followed by the
// process id and a dash.
const poolDirPrefix = "pmemgo-bench-"

var sweep sync.Once

// removeStale removes the pool directories in dir of processes that no
// longer exist. A directory of a live process, or whose name does not
// say its process, is left alone.
func removeStale(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), poolDirPrefix)
		pidText, _, dash := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || !dash || err != nil || pid <= 0 || !e.IsDir() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// Status is the memory figures of /proc/self/status, in bytes.
type Status struct {
	// VmRSS is the resident set; RssAnon, RssFile and RssShmem are its
	// anonymous, file-backed and shared-memory (tmpfs, shared anonymous)
	// parts.
	VmRSS, RssAnon, RssFile, RssShmem int64
	// VmHWM is the peak resident set since the process started or
	// ResetPeak was last called.
	VmHWM int64
}

// ReadStatus reads the memory figures of /proc/self/status.
func ReadStatus() (Status, error) {
	var st Status
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return st, err
	}
	fields := map[string]*int64{
		"VmRSS": &st.VmRSS, "RssAnon": &st.RssAnon, "RssFile": &st.RssFile,
		"RssShmem": &st.RssShmem, "VmHWM": &st.VmHWM,
	}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		dst := fields[name]
		if !ok || dst == nil {
			continue
		}
		// "RssAnon:	    1234 kB"
		v, unit, _ := strings.Cut(strings.TrimSpace(rest), " ")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || unit != "kB" {
			return st, fmt.Errorf("/proc/self/status: cannot read %q", sc.Text())
		}
		*dst = n << 10
		found++
	}
	if found != len(fields) {
		return st, fmt.Errorf("/proc/self/status: found %d of the %d memory fields", found, len(fields))
	}
	return st, nil
}

// ResetPeak resets VmHWM to the current resident set (Linux 4.0 and
// later), so that a later VmHWM is the peak of what happened in between.
func ResetPeak() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// MB converts bytes to mebibytes for b.ReportMetric.
func MB(n int64) float64 { return float64(n) / (1 << 20) }
