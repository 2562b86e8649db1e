package swizzle

// RunBytes is the most a Run spans. Slot areas are copied through the file
// a run at a time rather than a slab at a time: a read or write costs
// about 4 us in the syscall alone under a hypervisor, as much as copying
// 16 KiB. Measured on a 1 GiB pool of 64 KiB slabs, runs of 256 KiB made
// the relocated open 8% faster than one read per slab; runs of 1 MiB were
// slower again, since a worker's buffer then no longer stays in its cache
// between the copy and the pass over the pointers.
const RunBytes = 256 << 10

// Run is a run of consecutive slot areas, items [First, End) of the list it
// was made from, that one read of bytes [Off, Off+Len) of the pool covers,
// with whatever lies between them (slab headers, slabs with no pointers).
type Run struct {
	First, End int
	Off, Len   uint64
}

// Runs groups n slot areas, where area(i) gives the pool offset and size
// of item i in increasing offset order, into runs spanning at most limit
// bytes. An area larger than limit is a run of its own.
func Runs(n int, area func(i int) (off, size uint64), limit uint64) []Run {
	var runs []Run
	for i := 0; i < n; {
		off, size := area(i)
		r := Run{First: i, End: i + 1, Off: off, Len: size}
		for r.End < n {
			o, s := area(r.End)
			if o < r.Off+r.Len || o+s-r.Off > limit {
				break
			}
			r.Len = o + s - r.Off
			r.End++
		}
		runs = append(runs, r)
		i = r.End
	}
	return runs
}
