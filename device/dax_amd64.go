package device

import "unsafe"

func cpuid(eax, ecx uint32) (a, b, c, d uint32)

func flushCLWB(p unsafe.Pointer, lines uintptr)
func flushCLFLUSHOPT(p unsafe.Pointer, lines uintptr)
func flushCLFLUSH(p unsafe.Pointer, lines uintptr)
func sfence()

// cpuFlush reads, with CPUID, which cache-line write-back instructions the
// processor has.
func cpuFlush() cpuFeatures {
	maxLeaf, _, _, _ := cpuid(0, 0)
	_, _, _, edx1 := cpuid(1, 0)
	var f cpuFeatures
	f.clflush = edx1&(1<<19) != 0
	if maxLeaf >= 7 {
		_, ebx7, _, _ := cpuid(7, 0)
		f.clflushopt = ebx7&(1<<23) != 0
		f.clwb = ebx7&(1<<24) != 0
	}
	return f
}

// flushers are the write-back loops, by instruction.
var flushers = map[Instruction]func(unsafe.Pointer, uintptr){
	CLWB:       flushCLWB,
	CLFLUSHOPT: flushCLFLUSHOPT,
	CLFLUSH:    flushCLFLUSH,
}

func fence() { sfence() }
