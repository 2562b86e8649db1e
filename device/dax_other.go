//go:build !amd64

package device

import "unsafe"

func cpuFlush() cpuFeatures { return cpuFeatures{} }

var flushers = map[Instruction]func(unsafe.Pointer, uintptr){}

func fence() {}
