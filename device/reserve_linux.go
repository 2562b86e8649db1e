package device

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapping is a pool file mapped by a device: when Map was asked to
// reserve address space, at the start of a range reserved (PROT_NONE,
// MAP_NORESERVE) for the mapping to grow into; otherwise exactly the
// pages it maps.
type mapping struct {
	f      *os.File
	shared bool
	data   []byte
	// mapped counts the bytes mapped from data's start, whole pages;
	// reserved those of the reservation, zero when there is none.
	mapped, reserved int
	unmapFile        func() error
}

// mapGrowable maps the first size bytes of f as mapFile does, inside a
// reservation of req.Reserve bytes when that is larger than size.
func mapGrowable(f *os.File, size int, shared bool, req MapRequest) (*mapping, error) {
	if req.Reserve <= size {
		data, unmap, err := mapFile(f, size, shared, req)
		if err != nil {
			return nil, err
		}
		return &mapping{f: f, shared: shared, data: data, mapped: alignUp(size, pageSize), unmapFile: unmap}, nil
	}
	if err := checkSize(f, size); err != nil {
		return nil, err
	}
	return mapReserved(f, size, shared, req)
}

// mapAnonGrowable maps size bytes of private anonymous memory (zeros)
// inside a reservation of req.Reserve bytes, placed as mapGrowable places
// a file, so that grow(n, false) extends it in place. Its f is nil.
func mapAnonGrowable(size int, req MapRequest) (*mapping, error) {
	if size <= 0 || req.Reserve < size {
		return nil, fmt.Errorf("map anonymous memory: invalid size %d in a reservation of %d", size, req.Reserve)
	}
	return mapReserved(nil, size, false, req)
}

// mapReserved maps the first size bytes of f, or anonymous zeros when f
// is nil, at the start of a reservation of req.Reserve bytes.
func mapReserved(f *os.File, size int, shared bool, req MapRequest) (*mapping, error) {
	n := alignUp(req.Reserve, pageSize)
	base, err := reserve(uintptr(n), req)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", nameOf(f), err)
	}
	m := &mapping{f: f, shared: shared, reserved: n}
	if err := m.mapAt(base, 0, alignUp(size, pageSize), f != nil); err != nil {
		_ = unix.MunmapPtr(base, uintptr(n))
		return nil, err
	}
	m.mapped = alignUp(size, pageSize)
	m.data = unsafe.Slice((*byte)(base), size)
	return m, nil
}

// mapAt maps [off, off+n) of the file, or anonymous zero pages when file
// is false, at base+off: MAP_FIXED, which is safe only because the range
// lies in this mapping's own reservation.
func (m *mapping) mapAt(base unsafe.Pointer, off, n int, file bool) error {
	flags, fd := unix.MAP_PRIVATE|unix.MAP_NORESERVE|unix.MAP_FIXED, -1
	if m.f != nil {
		fd = int(m.f.Fd())
	}
	if m.shared {
		flags = unix.MAP_SHARED | unix.MAP_FIXED
	}
	if !file {
		flags, fd = unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED, -1
	}
	addr := unsafe.Add(base, off)
	p, err := unix.MmapPtr(fd, int64(off), addr, uintptr(n), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return fmt.Errorf("map %s [%d, +%d) in its reservation: %w", nameOf(m.f), off, n, err)
	}
	if p != addr {
		_ = unix.MunmapPtr(p, uintptr(n))
		return fmt.Errorf("map %s [%d, +%d): placed at %p, not %p", nameOf(m.f), off, n, p, addr)
	}
	return nil
}

// grow makes data size bytes long, mapping the pages it lacks right after
// the mapped ones: from the file, which must be long enough, or anonymous
// zero pages when file is false.
func (m *mapping) grow(size int, file bool) error {
	if size <= len(m.data) {
		return nil
	}
	if size > m.reserved {
		return fmt.Errorf("grow the mapping of %s to %d bytes: %d bytes of address space were reserved at open: %w",
			nameOf(m.f), size, m.reserved, ErrNoGrowth)
	}
	base := unsafe.Pointer(unsafe.SliceData(m.data))
	if end := alignUp(size, pageSize); end > m.mapped {
		if err := m.mapAt(base, m.mapped, end-m.mapped, file); err != nil {
			return err
		}
		m.mapped = end
	}
	m.data = unsafe.Slice((*byte)(base), size)
	return nil
}

// unmap drops the mapping and its reservation.
func (m *mapping) unmap() error {
	if m.reserved == 0 {
		return m.unmapFile()
	}
	if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(m.data)), uintptr(m.reserved)); err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	return nil
}

// reserve reserves n bytes of address space, at req.Hint when it is free,
// otherwise below the range where processes' mmap areas start (see
// lowPlace), and failing that anywhere that overlaps no range of
// req.Avoid, as mapFile places a mapping. The reservation costs no
// memory: its pages are PROT_NONE and MAP_NORESERVE until mapped.
func reserve(n uintptr, req MapRequest) (unsafe.Pointer, error) {
	if req.Hint != 0 {
		if p, ok := reserveAt(req.Hint, n); ok {
			return p, nil
		}
	}
	if p, ok := reserveLow(n, req.Avoid); ok {
		return p, nil
	}
	// A rejected range stays reserved until the end, so that the kernel
	// cannot offer it again.
	var rejected []unsafe.Pointer
	defer func() {
		for _, p := range rejected {
			_ = unix.MunmapPtr(p, n)
		}
	}()
	for range mapAttempts {
		p, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return nil, fmt.Errorf("reserve %d bytes of address space: %w", n, err)
		}
		r := Range{Start: uintptr(p), Len: n}
		if !overlapsAny(r, req.Avoid) {
			return p, nil
		}
		rejected = append(rejected, p)
		for _, a := range req.Avoid {
			if !r.Overlaps(a) {
				continue
			}
			for _, addr := range besideAddrs(a, n) {
				if addr == 0 || overlapsAny(Range{Start: addr, Len: n}, req.Avoid) {
					continue
				}
				if p, ok := reserveAt(addr, n); ok {
					return p, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("reserve %d bytes: %d attempts: %w", n, mapAttempts, ErrNoAddress)
}

// reserveLow reserves n bytes at a low place, as mapLow maps.
func reserveLow(n uintptr, avoid []Range) (unsafe.Pointer, bool) {
	lowMu.Lock()
	defer lowMu.Unlock()
	for range lowAttempts {
		a := lowPlace(n, avoid)
		if a == 0 {
			return nil, false
		}
		if p, ok := reserveAt(a, n); ok {
			return p, true
		}
	}
	return nil, false
}

// reserveAt reserves n bytes at addr, or reports false when any of them is
// in use (MAP_FIXED_NOREPLACE never replaces a mapping).
func reserveAt(addr, n uintptr) (unsafe.Pointer, bool) {
	// addr is not Go memory; see mapFixed.
	hint := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	p, err := unix.MmapPtr(-1, 0, hint, n, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED_NOREPLACE)
	if err != nil {
		return nil, false
	}
	if p != hint {
		_ = unix.MunmapPtr(p, n)
		return nil, false
	}
	return p, true
}
