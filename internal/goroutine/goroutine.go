// Package goroutine identifies the running goroutine cheaply, so that the
// heap can tell a nested transaction (a goroutine waiting for a lock it
// holds itself) from ordinary contention.
//
// The identity is the address of the runtime's descriptor of the goroutine
// (its g). It is unique among live goroutines and may be reused once a
// goroutine exits, so it is only compared while the goroutine that
// recorded it is known to be alive, for instance while it holds a lock.
package goroutine

// ID returns the identity of the calling goroutine, or 0 on architectures
// where it is not available (Supported reports false there).
func ID() uintptr { return getg() }

// Supported reports whether ID identifies goroutines on this architecture.
func Supported() bool { return supported }
