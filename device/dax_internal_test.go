package device

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBestInstruction(t *testing.T) {
	for _, tc := range []struct {
		f    cpuFeatures
		want Instruction
	}{
		{cpuFeatures{clwb: true, clflushopt: true, clflush: true}, CLWB},
		{cpuFeatures{clwb: true}, CLWB},
		{cpuFeatures{clflushopt: true, clflush: true}, CLFLUSHOPT},
		{cpuFeatures{clflush: true}, CLFLUSH},
		{cpuFeatures{}, ""},
	} {
		assert.Equal(t, tc.want, tc.f.best(), "%+v", tc.f)
	}
}

// TestCPUFeatures checks CPUID's answer against the kernel's: every
// instruction /proc/cpuinfo lists, CPUID must report.
func TestCPUFeatures(t *testing.T) {
	flags := cpuinfoFlags(t)
	f := cpuFlush()
	for name, has := range map[string]bool{"clwb": f.clwb, "clflushopt": f.clflushopt, "clflush": f.clflush} {
		assert.Equal(t, flags[name], has, "%s: CPUID and /proc/cpuinfo disagree", name)
	}
}
