package heap

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// DefaultMaxSize bounds the maximum size of a pool when Options.MaxSize
// is zero: the limit is then the size of the file system the pool is
// created on, at most DefaultMaxSize, and never below Size. Every
// read-write open reserves the pool's maximum size of address space
// (which costs no memory), so a limit far beyond what the pool will need
// only takes address space.
const DefaultMaxSize = 1 << 40

// defaultMaxSize returns the maximum size of a pool of size bytes at path
// whose options set none.
func defaultMaxSize(path string, size uint64) uint64 {
	limit := uint64(DefaultMaxSize)
	var st unix.Statfs_t
	if unix.Statfs(filepath.Dir(path), &st) == nil && st.Blocks > 0 {
		limit = min(limit, st.Blocks*uint64(st.Bsize))
	}
	return max(limit&^(layout.GrowthUnit-1), size)
}

// Grow makes the pool at least size bytes long, rounded up to a multiple
// of layout.GrowthUnit, as an allocation that finds no room does: in
// place, so that every pointer into the pool stays valid, and
// crash-atomically. A pool already that large is left as it is. size
// beyond the pool's maximum size (Options.MaxSize) is an error wrapping
// pmemgo.ErrNoSpace.
func (h *Heap) Grow(size int64) error {
	if h.lock.heldByCaller() {
		return fmt.Errorf("grow inside a transaction: %w", pmemgo.ErrNestedTx)
	}
	if err := h.lock.lock(context.Background()); err != nil {
		return err
	}
	defer h.lock.unlock()
	switch {
	case h.closed:
		return pmemgo.ErrClosed
	case h.broken != nil:
		return h.broken
	case h.ro:
		return pmemgo.ErrReadOnly
	case size < 0:
		return fmt.Errorf("grow to %d bytes: %w", size, pmemgo.ErrInvalidOptions)
	}
	want := (uint64(size) + layout.GrowthUnit - 1) &^ (layout.GrowthUnit - 1)
	if want <= h.pool.Header.Size {
		return nil
	}
	return h.growTo(want)
}

// growFor grows the pool, doubling its size as often as needed up to its
// maximum size, until it has at least slabs slabs. Allocations call it,
// under the writer lock, when they find no free run long enough.
func (h *Heap) growFor(slabs uint64) error {
	hdr := h.pool.Header
	limit := hdr.MaxSize &^ (layout.GrowthUnit - 1)
	size := hdr.Size
	for size < limit {
		size = min(max(2*size, hdr.Size+layout.GrowthUnit)&^(layout.GrowthUnit-1), limit)
		if g, err := layout.Grown(hdr, size); err == nil && g.Slabs >= slabs {
			return h.growTo(size)
		}
	}
	return fmt.Errorf("the pool of %d bytes (%d slabs) cannot grow to hold %d slabs within its maximum size of %d bytes: %w",
		hdr.Size, hdr.Slabs, slabs, hdr.MaxSize, pmemgo.ErrNoSpace)
}

// growTo grows the pool to size bytes and gives the new slabs to the
// allocator. Open snapshots keep the header lines the growth rewrites;
// the new part lies beyond what they cover.
func (h *Heap) growTo(size uint64) error {
	if h.ro {
		return pmemgo.ErrReadOnly
	}
	for i := range 2 {
		h.cow(uint64(layout.SlotOff(i)), layout.HeaderBytes)
	}
	h.cow(layout.OpenMarkOff, 8)
	err := h.pool.Grow(size)
	h.mem = h.dev.Bytes()
	if err != nil {
		if errors.Is(err, pmemgo.ErrNoSpace) {
			return err
		}
		return fmt.Errorf("%w: %w", pmemgo.ErrNoSpace, err)
	}
	h.stats.growths++
	return nil
}
