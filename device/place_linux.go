package device

import (
	"bufio"
	"cmp"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// placeMargin is left between a low reservation and the lowest address at
// which any process's mmap area may start, for what such a process maps
// below that start before it opens the pool.
const placeMargin = 64 << 30

// placeAlign aligns low reservations, so that mappings may use huge pages.
const placeAlign = 2 << 20

// mmapWindow returns the size of the range in which Linux randomises the
// start of a process's mmap area (vm.mmap_rnd_bits bits of pages; 28 on
// x86-64 by default, so 1 TiB), or a conservative 1 TiB when it cannot be
// read.
var mmapWindow = sync.OnceValue(func() uintptr {
	bits := 28
	if b, err := os.ReadFile("/proc/sys/vm/mmap_rnd_bits"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 && n < 40 {
			bits = n
		}
	}
	return uintptr(1) << bits * uintptr(pageSize)
})

// lowMu is held from the look for a low place to the mapping made there,
// so that two pools opened at once do not both find the same place and
// one of them, refused, fall back to the kernel's choice.
var lowMu sync.Mutex

// lowPlace returns a free address for a reservation of n bytes below the
// range where the kernel starts the mmap area of any process, or 0. A
// reservation placed where the kernel would place it (just below this
// process's mmap start, which address space layout randomisation moves
// from one process to the next) lands, in another process, on that
// process's own early mappings with a probability of about n over the
// randomisation window; a pool reopened there would then move and be
// swizzled. Below the window no process maps anything unless asked to, so
// a large reservation finds its range free again when the pool is
// reopened elsewhere.
func lowPlace(n uintptr, avoid []Range) uintptr {
	probe, err := unix.MmapPtr(-1, 0, nil, uintptr(pageSize), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0
	}
	start := uintptr(probe)
	_ = unix.MunmapPtr(probe, uintptr(pageSize))
	// This process's mmap area starts above the probe, and every other
	// process's no lower than a window below this one's.
	if start < mmapWindow()+placeMargin+n {
		return 0
	}
	top := start - mmapWindow() - placeMargin
	used, ok := mappedRanges()
	if !ok {
		return 0
	}
	return highestGap(append(used, avoid...), top, n)
}

// highestGap returns the highest address a, aligned to placeAlign, with
// [a, a+n) below top and overlapping no range of used, or 0. The ranges
// are taken by descending end, so that one starting low but reaching far
// up (a caller's range to avoid may cover others) closes every gap it
// covers before any gap below it is considered: when a range's end is
// reached, every range ending above it has lowered the cursor to its
// start, and nothing lies between the two.
func highestGap(used []Range, top, n uintptr) uintptr {
	end := func(r Range) uintptr {
		if e := r.Start + r.Len; e >= r.Start {
			return e
		}
		return ^uintptr(0)
	}
	slices.SortFunc(used, func(a, b Range) int { return cmp.Compare(end(b), end(a)) })
	cursor := top
	for _, r := range used {
		if e := end(r); e < cursor && cursor-e >= n {
			if a := (cursor - n) &^ (placeAlign - 1); a >= e {
				return a
			}
		}
		cursor = min(cursor, r.Start)
	}
	// Below the lowest mapping: the executable and Go's heap are mapped
	// low, so this is reached only in an address space with nothing in it.
	return 0
}

// mappedRanges returns the ranges of this process's mappings, from
// /proc/self/maps.
func mappedRanges() ([]Range, bool) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var rs []Range
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		field, _, _ := strings.Cut(sc.Text(), " ")
		lo, hi, ok := strings.Cut(field, "-")
		if !ok {
			return nil, false
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || b < a {
			return nil, false
		}
		rs = append(rs, Range{Start: uintptr(a), Len: uintptr(b - a)})
	}
	return rs, sc.Err() == nil
}
