// Package fsx holds file helpers that several packages need alike.
package fsx

import (
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// Allocate makes f at least size bytes long with its first size bytes
// reserved on the file system (fallocate), so that a full disk is an
// error here rather than a SIGBUS later, when a shared mapping of the file
// is written. Bytes already in f are kept. Where the file system cannot
// reserve space, f is only extended.
func Allocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() < size {
			err = f.Truncate(size)
		}
	}
	if err != nil {
		return fmt.Errorf("allocate %d bytes for %s: %w", size, f.Name(), err)
	}
	return nil
}

// FaultError is a memory fault that CatchFault turned into an error: a
// load or store on a shared mapping whose file shrank under it, or whose
// page could not be read in.
type FaultError struct{ Addr uintptr }

func (e *FaultError) Error() string { return fmt.Sprintf("memory fault at %#x", e.Addr) }

// CatchFault runs fn and returns its error, or a *FaultError if fn
// faulted on memory at an address that ours accepts (any address when
// ours is nil). Any other panic, and a fault elsewhere, goes on.
func CatchFault(ours func(addr uintptr) bool, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(interface{ Addr() uintptr })
			if !ok || (ours != nil && !ours(f.Addr())) {
				panic(r)
			}
			err = &FaultError{Addr: f.Addr()}
		}
	}()
	return fn()
}
