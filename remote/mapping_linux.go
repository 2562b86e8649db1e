package remote

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

// mapAttempts bounds how many places mapAnon asks the kernel for.
const mapAttempts = 32

// mapAnon maps size bytes of anonymous memory at req.Hint if that is
// free (MAP_FIXED_NOREPLACE never replaces a mapping), else anywhere that
// overlaps no range of req.Avoid.
func mapAnon(size int, req device.MapRequest) ([]byte, error) {
	prot := unix.PROT_READ | unix.PROT_WRITE
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
	if req.Hint != 0 {
		hint := *(*unsafe.Pointer)(unsafe.Pointer(&req.Hint))
		p, err := unix.MmapPtr(-1, 0, hint, uintptr(size), prot, flags|unix.MAP_FIXED_NOREPLACE)
		if err == nil && p == hint {
			return unsafe.Slice((*byte)(p), size), nil
		}
		if err == nil {
			_ = unix.MunmapPtr(p, uintptr(size))
		}
	}
	// A rejected place stays mapped until the end, so that the kernel
	// does not offer it again.
	var rejected [][]byte
	defer func() {
		for _, b := range rejected {
			_ = unmapAnon(b)
		}
	}()
	for range mapAttempts {
		p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), prot, flags)
		if err != nil {
			return nil, fmt.Errorf("map %d bytes: %w", size, err)
		}
		b := unsafe.Slice((*byte)(p), size)
		r := device.Range{Start: uintptr(p), Len: uintptr(size)}
		ok := true
		for _, a := range req.Avoid {
			if r.Overlaps(a) {
				ok = false
			}
		}
		if ok {
			return b, nil
		}
		rejected = append(rejected, b)
	}
	return nil, fmt.Errorf("map %d bytes: %d attempts: %w", size, mapAttempts, device.ErrNoAddress)
}

func unmapAnon(b []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
