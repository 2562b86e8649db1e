package remote

import (
	"bytes"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// evictEvery bounds how often a fence scans residency.
const evictEvery = 5 * time.Millisecond

// evict drops clean pages while more than cap pages are resident. A page
// is clean when it equals its backup copy, which holds every committed
// line: a page with stores not yet committed differs and stays, and a
// page the node lacks stays too, so that it never faults back in stale.
// Fences run on the writer's goroutine, so no store of the writer races
// the comparison. Called with d.mu held.
func (d *remoteDevice) evict() {
	if d.cap == 0 || time.Since(d.lastEvict) < evictEvery {
		return
	}
	d.lastEvict = time.Now()
	pages := len(d.mem) / PageSize
	vec := make([]byte, pages)
	if err := mincore(d.mem, vec); err != nil {
		return
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	// Drop an eighth of the cap beyond what is needed, so that the scan
	// is not repeated at every fence.
	need := resident - d.cap + d.cap/8
	if resident <= d.cap || need <= 0 {
		return
	}
	buf := make([]byte, PageSize)
	var recs []byte
	if d.seal != nil {
		recs = make([]byte, 2*PageSize)
	}
	for scanned := 0; scanned < pages && need > 0; scanned++ {
		p := d.hand
		d.hand = (d.hand + 1) % pages
		if vec[p]&1 == 0 || d.staleOnNode(p) {
			continue
		}
		page := d.mem[p*PageSize : (p+1)*PageSize]
		if err := d.backupPage(buf, recs, p); err != nil || !bytes.Equal(buf, page) {
			continue
		}
		if unix.Madvise(page, unix.MADV_DONTNEED) == nil {
			need--
			d.stats.Evicted++
		}
	}
}

// staleOnNode reports whether the node lacks a commit to pool page p:
// its page, or for a sealed pool one of the two pages of its records.
func (d *remoteDevice) staleOnNode(p int) bool {
	lo, hi := uint64(p), uint64(p)+1
	if d.seal != nil {
		lo, hi = recordOff(uint64(p)*PageSize)/PageSize, recordOff(uint64(p+1)*PageSize)/PageSize
	}
	for q := lo; q < hi; q++ {
		if _, stale := d.stale[q]; stale {
			return true
		}
	}
	return false
}

// backupPage reads pool page p from the backup into buf, by way of its
// records, opened, if the pool is sealed.
func (d *remoteDevice) backupPage(buf, recs []byte, p int) error {
	off := uint64(p) * PageSize
	if d.seal == nil {
		_, err := d.backup.ReadAt(buf, int64(off))
		return err
	}
	if _, err := d.backup.ReadAt(recs, int64(recordOff(off))); err != nil {
		return err
	}
	return openRecords(d.seal.opener, buf, recs, off)
}

// mincore fills vec with the residency of b's pages (bit 0 set when in
// memory); x/sys/unix has no wrapper for it.
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return e
	}
	return nil
}
