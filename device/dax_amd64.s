#include "textflag.h"

// func cpuid(eax, ecx uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eax+0(FP), AX
	MOVL ecx+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func flushCLWB(p unsafe.Pointer, lines uintptr)
TEXT ·flushCLWB(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ lines+8(FP), CX
clwb:
	TESTQ CX, CX
	JZ   clwbdone
	CLWB (AX)
	ADDQ $64, AX
	DECQ CX
	JMP  clwb
clwbdone:
	RET

// func flushCLFLUSHOPT(p unsafe.Pointer, lines uintptr)
TEXT ·flushCLFLUSHOPT(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ lines+8(FP), CX
opt:
	TESTQ CX, CX
	JZ   optdone
	CLFLUSHOPT (AX)
	ADDQ $64, AX
	DECQ CX
	JMP  opt
optdone:
	RET

// func flushCLFLUSH(p unsafe.Pointer, lines uintptr)
TEXT ·flushCLFLUSH(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ lines+8(FP), CX
cl:
	TESTQ CX, CX
	JZ   cldone
	CLFLUSH (AX)
	ADDQ $64, AX
	DECQ CX
	JMP  cl
cldone:
	RET

// func sfence()
TEXT ·sfence(SB), NOSPLIT, $0-0
	SFENCE
	RET
