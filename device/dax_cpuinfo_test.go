package device

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// cpuinfoFlags returns the flags of the first processor in /proc/cpuinfo,
// or skips the test where there is none to compare with.
func cpuinfoFlags(t *testing.T) map[string]bool {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("CPUID is read on amd64 only")
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags := map[string]bool{}
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			return flags
		}
	}
	t.Skip("no flags line in /proc/cpuinfo")
	return nil
}
