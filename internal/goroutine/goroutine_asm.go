//go:build amd64 || arm64

package goroutine

const supported = true

func getg() uintptr
