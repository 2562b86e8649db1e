package device

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/internal/seal"
)

// Grow makes the sealed pool size bytes long, when Map reserved room for
// it (see Grower), in three steps, each durable before the next:
//
//  1. The file gets the records of the new lines, blank (a line never
//     written), through the inner device, which allocates and syncs them.
//     Records a growth interrupted by a crash left past the pool's end
//     are blanked first: the new part must read as zeros, as the digest
//     counts it.
//  2. The sealed header is rewritten with the new size, in one sector.
//  3. The plaintext is mapped on in place, zeros.
//
// The pool's own header, which the heap writes next, is what makes the
// growth count. A crash before it leaves a file longer than its header
// says, or a header that says more than the pool holds; Map and
// ReadSealedHeader accept both, and the next growth reuses the space.
func (d *sealedDevice) Grow(size int) error {
	if err := checkGrow(d.closed, &d.subs); err != nil {
		return err
	}
	old := len(d.plain)
	if size <= old {
		return nil
	}
	g, ok := d.inner.(Grower)
	switch {
	case d.grow == nil || !ok:
		return fmt.Errorf("grow sealed pool to %d bytes: no room was reserved when it was mapped: %w", size, ErrNoGrowth)
	case size > d.grow.reserved:
		return fmt.Errorf("grow sealed pool to %d bytes: %d bytes of address space were reserved at open: %w", size, d.grow.reserved, ErrNoGrowth)
	case size%pageSize != 0:
		return fmt.Errorf("grow sealed pool to %d bytes: not a multiple of %d", size, pageSize)
	}
	if err := d.blankTail(seal.FileSize(int64(old))); err != nil {
		return err
	}
	if err := g.Grow(int(seal.FileSize(int64(size)))); err != nil {
		return fmt.Errorf("grow sealed file: %w", err)
	}
	d.recs = d.inner.Bytes()
	if uint64(size) > d.hdr.PoolSize {
		hdr := d.hdr
		hdr.PoolSize = uint64(size)
		hdr.Rekey(d.keys, d.prev)
		if err := d.writeHeader(hdr); err != nil {
			return err
		}
	}
	if err := d.grow.grow(size, false); err != nil {
		return err
	}
	d.plain = d.grow.data
	d.lineDig = append(d.lineDig, make([]uint64, (size-old)/seal.LineSize)...)
	d.subs.grown(size)
	return nil
}

// blankTail zeroes the sealed file from end, the end of the pool's
// records, to the end of the file, and syncs it: what is there was left
// by a growth that a crash interrupted, and was never part of the pool.
// The inner device maps nothing past end.
func (d *sealedDevice) blankTail(end int64) error {
	fi, err := d.file.Stat()
	if err != nil {
		return fmt.Errorf("grow sealed file: %w", err)
	}
	n := fi.Size() - end
	if n <= 0 {
		return nil
	}
	fd := int(d.file.Fd())
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, end, n); err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("grow sealed file: blank records [%d, %d) past the pool's end: %w", end, fi.Size(), err)
		}
		if err := zeroRange(d.file, end, fi.Size()); err != nil {
			return fmt.Errorf("grow sealed file: blank records past the pool's end: %w", err)
		}
	}
	if err := d.file.Sync(); err != nil {
		return fmt.Errorf("grow sealed file: %w", err)
	}
	return nil
}
