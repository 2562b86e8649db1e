package device

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// mapAttempts bounds how many times mapFile asks the kernel for an address
// before giving up on finding one outside the ranges to avoid.
const mapAttempts = 32

// mapFile maps the first size bytes of f, shared (stores reach the file) or
// private (copy-on-write, which works on a read-only file too). It tries
// req.Hint first, then a low place (see mapLow), and otherwise places the
// mapping anywhere that overlaps no range of req.Avoid. The hint is tried
// even if it lies in req.Avoid, because callers list the pool's previous
// place there and getting it back is what keeps stored pointers valid. The
// returned function unmaps.
func mapFile(f *os.File, size int, shared bool, req MapRequest) ([]byte, func() error, error) {
	if err := checkSize(f, size); err != nil {
		return nil, nil, err
	}
	if req.Hint != 0 {
		if b, ok := mapFixed(f, size, shared, req.Hint); ok {
			return b, unmapFixed(b), nil
		}
	}
	if b, ok := mapLow(f, size, shared, req.Avoid); ok {
		return b, unmapFixed(b), nil
	}
	return mapAvoiding(f, size, shared, req.Avoid)
}

// mapLow maps f below the range where any process's mmap area starts (see
// lowPlace), or reports false. A pool placed where the kernel places
// mappings loses its place as soon as it is closed: the Go runtime, the
// race detector and every other mapping the process makes afterwards
// fill the hole from the top down, so that reopening it in the same
// process, or in another one, moves it and rewrites every pointer. Low,
// nothing maps unless asked to. Low places are taken one at a time (see
// lowMu); one taken by other code between the look at the process's
// mappings and the mapping is looked for again.
func mapLow(f *os.File, size int, shared bool, avoid []Range) ([]byte, bool) {
	lowMu.Lock()
	defer lowMu.Unlock()
	for range lowAttempts {
		a := lowPlace(uintptr(alignUp(size, pageSize)), avoid)
		if a == 0 {
			return nil, false
		}
		if b, ok := mapFixed(f, size, shared, a); ok {
			return b, true
		}
	}
	return nil, false
}

// lowAttempts bounds how many low places mapLow tries.
const lowAttempts = 4

// checkSize rejects sizes that cannot be mapped, since touching a mapping
// beyond the end of its file kills the process with SIGBUS.
func checkSize(f *os.File, size int) error {
	if size <= 0 {
		return fmt.Errorf("map %s: invalid size %d", f.Name(), size)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("map %s: %w", f.Name(), err)
	}
	if fi.Size() < int64(size) {
		return fmt.Errorf("map %s: file has %d bytes, fewer than the %d to map", f.Name(), fi.Size(), size)
	}
	return nil
}

// mapFixed maps f at addr, or reports false. MAP_FIXED_NOREPLACE makes the
// kernel refuse an address in use instead of replacing what is there, as
// MAP_FIXED would. Kernels older than 4.17 ignore the flag and take addr as
// a mere hint, so the result is checked and dropped if it landed elsewhere.
func mapFixed(f *os.File, size int, shared bool, addr uintptr) ([]byte, bool) {
	flags := mapFlags(shared)
	fd := -1
	if f == nil {
		flags |= unix.MAP_ANONYMOUS
	} else {
		fd = int(f.Fd())
	}
	// addr is not Go memory, so the garbage collector has nothing to track;
	// converting through a pointer variable only keeps vet from mistaking
	// it for a Go pointer hidden in a uintptr.
	hint := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	p, err := unix.MmapPtr(fd, 0, hint, uintptr(size),
		unix.PROT_READ|unix.PROT_WRITE, flags|unix.MAP_FIXED_NOREPLACE)
	if err != nil {
		return nil, false
	}
	if p != hint {
		_ = unix.MunmapPtr(p, uintptr(size))
		return nil, false
	}
	return unsafe.Slice((*byte)(p), size), true
}

// unmapFixed returns the unmapper of a mapping made by mapFixed. mmap-go
// cannot unmap it: it only knows the mappings it made itself.
func unmapFixed(b []byte) func() error {
	return func() error {
		if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b))); err != nil {
			return fmt.Errorf("munmap: %w", err)
		}
		return nil
	}
}

// mapAvoiding maps f wherever the kernel likes, as long as the place
// overlaps no range of avoid.
func mapAvoiding(f *os.File, size int, shared bool, avoid []Range) ([]byte, func() error, error) {
	flags, fd := mapFlags(shared), -1
	if f == nil {
		flags |= unix.MAP_ANONYMOUS
	} else {
		fd = int(f.Fd())
	}
	// A rejected mapping stays mapped until the end, so that the kernel
	// cannot offer the same place again.
	var rejected []mmap.MMap
	defer func() {
		for i := range rejected {
			// Failing to drop a rejected mapping leaks address space but
			// does not affect the mapping returned.
			_ = rejected[i].Unmap()
		}
	}()
	for range mapAttempts {
		b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, flags)
		m := mmap.MMap(b)
		if err != nil {
			return nil, nil, fmt.Errorf("map %s: %w", nameOf(f), err)
		}
		r := addrRange(m)
		if !overlapsAny(r, avoid) {
			return m, func() error { return unmapRegion(m) }, nil
		}
		rejected = append(rejected, m)
		if b, ok := mapBeside(f, size, shared, r, avoid); ok {
			return b, unmapFixed(b), nil
		}
	}
	return nil, nil, fmt.Errorf("map %s: %d attempts: %w", nameOf(f), mapAttempts, ErrNoAddress)
}

// MapAnonymous maps size bytes of private anonymous memory (MAP_NORESERVE)
// where req asks, as a pool file is placed: at req.Hint when it is free,
// else below the mmap area (where a closed pool keeps its place for a
// reopen), else anywhere that overlaps no range of req.Avoid. It returns
// the memory and the function that unmaps it. Devices that fill a pool's
// memory themselves (a remote pool's pages) map it with this.
func MapAnonymous(size int, req MapRequest) ([]byte, func() error, error) {
	return mapAnon(size, req)
}

// mapAnon maps size bytes of private anonymous memory where req asks, as
// mapFile places a file.
func mapAnon(size int, req MapRequest) ([]byte, func() error, error) {
	if size <= 0 {
		return nil, nil, fmt.Errorf("map anonymous memory: invalid size %d", size)
	}
	if req.Hint != 0 {
		if b, ok := mapFixed(nil, size, false, req.Hint); ok {
			return b, unmapFixed(b), nil
		}
	}
	if b, ok := mapLow(nil, size, false, req.Avoid); ok {
		return b, unmapFixed(b), nil
	}
	return mapAvoiding(nil, size, false, req.Avoid)
}

// nameOf names f in errors; nil is anonymous memory.
func nameOf(f *os.File) string {
	if f == nil {
		return "anonymous memory"
	}
	return f.Name()
}

// mapFlags returns the mmap flags of a shared or a private mapping. A
// private mapping is writable copy-on-write memory that the kernel would
// otherwise reserve in full against its overcommit limit when it is made:
// a 64 GiB pool then fails to map for reading or checking on a machine with
// less memory, although only the pages written are ever copied.
// MAP_NORESERVE charges each copied page when it is made.
func mapFlags(shared bool) int {
	if shared {
		return unix.MAP_SHARED
	}
	return unix.MAP_PRIVATE | unix.MAP_NORESERVE
}

// unmapRegion unmaps a mapping made by mapAvoiding: mmap-go unmaps what
// unix.Mmap mapped, as it maps with it itself.
func unmapRegion(m mmap.MMap) error {
	if err := m.Unmap(); err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	return nil
}

// mapBeside tries the places just below and just above each range of avoid
// that r overlaps. Without it, a small mapping offered inside a large
// avoided hole would need one attempt per slice of the hole, as the kernel
// fills it from the top down.
func mapBeside(f *os.File, size int, shared bool, r Range, avoid []Range) ([]byte, bool) {
	n := uintptr(alignUp(size, pageSize))
	for _, a := range avoid {
		if !r.Overlaps(a) {
			continue
		}
		for _, addr := range besideAddrs(a, n) {
			if addr == 0 || overlapsAny(Range{Start: addr, Len: n}, avoid) {
				continue
			}
			if b, ok := mapFixed(f, size, shared, addr); ok {
				return b, true
			}
		}
	}
	return nil, false
}

// besideAddrs returns the page-aligned addresses where a mapping of n bytes
// would end right below a or start right above it; zero stands for one
// that does not fit in the address space.
func besideAddrs(a Range, n uintptr) [2]uintptr {
	page := uintptr(pageSize)
	var out [2]uintptr
	if below := a.Start &^ (page - 1); below >= n {
		out[0] = below - n
	}
	end := a.Start + a.Len
	if above := (end + page - 1) &^ (page - 1); end >= a.Start && above >= end && above+n > above {
		out[1] = above
	}
	return out
}

// addrRange returns the addresses m occupies, whole pages included.
func addrRange(m []byte) Range {
	return Range{
		Start: uintptr(unsafe.Pointer(unsafe.SliceData(m))),
		Len:   uintptr(alignUp(len(m), pageSize)),
	}
}

// overlapsAny reports whether r overlaps a range of avoid.
func overlapsAny(r Range, avoid []Range) bool {
	for _, a := range avoid {
		if r.Overlaps(a) {
			return true
		}
	}
	return false
}
