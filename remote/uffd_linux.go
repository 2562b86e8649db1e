package remote

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd ioctls and structures, from linux/userfaultfd.h (the values
// are the same on every architecture Go supports on Linux).
const (
	uffdAPI        = 0xAA
	uffdioAPI      = 0xC018AA3F
	uffdioRegister = 0xC020AA00
	uffdioWake     = 0x8010AA02
	uffdioCopy     = 0xC028AA03
	uffdioPoison   = 0xC020AA08
	uffdRegMissing = 1
	// uffdFeaturePoison asks for UFFDIO_POISON (Linux 6.6), with which a
	// page that cannot be served makes its readers fault (SIGBUS) rather
	// than wait for ever.
	uffdFeaturePoison = 1 << 14
	uffdEventFault    = 0x12
	uffdMsgSize       = 32
	uffdMsgAddrOff    = 16
	// uffdUserModeOnly limits the descriptor to faults taken in user mode,
	// which is all an unprivileged process may ask for.
	uffdUserModeOnly = 1
)

func uffdIoctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// newUffd opens a userfaultfd and registers [addr, addr+n) for missing
// page faults: each first touch of a page of the range then waits until
// the descriptor's reader installs the page.
func newUffd(addr uintptr, n int) (int, error) {
	fd, err := openUffd(uffdFeaturePoison)
	if err != nil {
		// A kernel without UFFDIO_POISON refuses the feature.
		fd, err = openUffd(0)
	}
	if err != nil {
		return -1, err
	}
	reg := [4]uint64{uint64(addr), uint64(n), uffdRegMissing, 0}
	if err := uffdIoctl(int(fd), uffdioRegister, unsafe.Pointer(&reg)); err != nil {
		unix.Close(int(fd))
		return -1, fmt.Errorf("userfaultfd register [%#x, +%d): %w", addr, n, err)
	}
	if reg[3]&(1<<3) == 0 {
		unix.Close(int(fd))
		return -1, errors.New("userfaultfd: the kernel offers no UFFDIO_COPY for this range")
	}
	return int(fd), nil
}

// openUffd opens a userfaultfd with the given features.
func openUffd(features uint64) (uintptr, error) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
	if e != 0 {
		// Without CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=0 allows only
		// user-mode faults: the pool must then not be handed to system
		// calls (read into it, write from it) before its pages are in.
		fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|uffdUserModeOnly, 0, 0)
		if e != 0 {
			return 0, fmt.Errorf("userfaultfd: %w", e)
		}
	}
	api := [3]uint64{uffdAPI, features, 0}
	if err := uffdIoctl(int(fd), uffdioAPI, unsafe.Pointer(&api)); err != nil {
		unix.Close(int(fd))
		return 0, fmt.Errorf("userfaultfd API handshake: %w", err)
	}
	return fd, nil
}

// uffdPoison makes the page at addr fault (SIGBUS) for every thread that
// touches it, those waiting on it included: a page the agent cannot serve
// (the node's copy is damaged and the backup does not hold it) is an
// error its readers see, instead of a wait without end. It fails on a
// kernel without UFFDIO_POISON.
func uffdPoison(fd int, addr uintptr) error {
	arg := [4]uint64{uint64(addr), PageSize, 0, 0}
	if err := uffdIoctl(fd, uffdioPoison, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("UFFDIO_POISON at %#x: %w", addr, err)
	}
	return nil
}

// uffdCopy installs the pages at src (this process's memory) at dst in the
// registered range, waking the threads waiting on them. A page already
// there is skipped, and its waiters woken.
func uffdCopy(fd int, dst uintptr, src []byte) error {
	for len(src) > 0 {
		arg := [5]uint64{uint64(dst), uint64(uintptr(unsafe.Pointer(unsafe.SliceData(src)))), uint64(len(src)), 0, 0}
		err := uffdIoctl(fd, uffdioCopy, unsafe.Pointer(&arg))
		// arg[4] holds the bytes copied, or a negated error when none were.
		done := max(int(int64(arg[4])), 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			// Partly copied (or the mapping was changing): go on after what
			// was copied.
		case errors.Is(err, unix.EEXIST):
			rng := [2]uint64{uint64(dst), PageSize}
			if err := uffdIoctl(fd, uffdioWake, unsafe.Pointer(&rng)); err != nil {
				return fmt.Errorf("UFFDIO_WAKE at %#x: %w", dst, err)
			}
			done = PageSize
		default:
			return fmt.Errorf("UFFDIO_COPY at %#x: %w", dst, err)
		}
		done = min(done, len(src))
		dst, src = dst+uintptr(done), src[done:]
	}
	return nil
}

// uffdWake wakes the threads waiting on faults in [addr, addr+n): those
// whose page is still missing fault again, and their faults are read anew.
func uffdWake(fd int, addr, n uintptr) error {
	rng := [2]uint64{uint64(addr), uint64(n)}
	if err := uffdIoctl(fd, uffdioWake, unsafe.Pointer(&rng)); err != nil {
		return fmt.Errorf("UFFDIO_WAKE [%#x, +%d): %w", addr, n, err)
	}
	return nil
}

// faultAddr returns the address of a page fault message, or false for
// another event.
func faultAddr(msg []byte) (uintptr, bool) {
	if msg[0] != uffdEventFault {
		return 0, false
	}
	return uintptr(le.Uint64(msg[uffdMsgAddrOff:])), true
}
