package device

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNoGrowth is returned by Grow when a device cannot grow its pool: no
// address space was reserved for it at Map, a subscriber that does not
// follow growth (see GrowthFollower) follows its write-backs, or the
// device does not grow pools at all.
var ErrNoGrowth = errors.New("pmemgo: the pool cannot grow")

// Grower is implemented by a Device whose pool can grow in place. Msync,
// Buffered, Emulated, Private, Dax and Sealed (over any of these) devices
// grow when Map was asked to reserve address space (MapRequest.Reserve).
type Grower interface {
	// Grow makes the pool size bytes long: the file is extended (its
	// blocks allocated, so that a full file system is an error here
	// rather than a SIGBUS at a later store, and its new size synced) and
	// the new part is mapped right after the old one, inside the range
	// reserved at Map, so that Bytes returns size bytes at the same
	// address and no byte of the pool moves. The new part reads as zeros
	// unless the file already held it. Nothing else is made durable. Grow
	// must not run concurrently with any other use of the device, Bytes
	// included. It fails with an error wrapping ErrNoGrowth when size is
	// beyond the reservation or while a subscriber that is not a
	// GrowthFollower is registered (it tracks a fixed range and would miss
	// the new part); GrowthFollowers are told the new size (Grown) before
	// Grow returns.
	Grow(size int) error
}

// extendFile makes f at least size bytes long with its blocks from from
// on allocated, and syncs it, so that the new size is durable. A file
// system without fallocate gets zeros written instead, which allocates as
// well.
func extendFile(f *os.File, from, size int) error {
	if size <= from {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, int64(from), int64(size-from))
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = writeZeros(f, int64(from), int64(size))
	}
	if err != nil {
		return fmt.Errorf("extend %s from %d to %d bytes: %w", f.Name(), from, size, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s after extending it to %d bytes: %w", f.Name(), size, err)
	}
	return nil
}

// writeZeros writes zeros over [from, size) of f where the file does not
// reach yet.
func writeZeros(f *os.File, from, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return zeroRange(f, max(from, fi.Size()), size)
}

// zeroRange writes zeros over [from, to) of f.
func zeroRange(f *os.File, from, to int64) error {
	zeros := make([]byte, min(max(to-from, 0), 1<<20))
	for off := from; off < to; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), to-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// checkGrow refuses a growth a device must not make.
func checkGrow(closed bool, subs *subscribers) error {
	switch {
	case closed:
		return ErrClosed
	case subs.unfollowing() > 0:
		return fmt.Errorf("%d write-back subscribers follow the pool's current range only (they are not device.GrowthFollowers): stop them, grow the pool, and start them again: %w",
			subs.unfollowing(), ErrNoGrowth)
	}
	return nil
}
