package recovery

import (
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// maxReserve bounds the address space an open reserves for growth: a
// quarter of the 47-bit user address space of x86-64 and arm64 Linux.
const maxReserve = 32 << 40

// Grow makes the pool size bytes long, in place and crash-atomically: the
// device extends the file (allocated and synced, so that the new size is
// durable) and maps the new part right after the old one; then the slab
// summary region of the grown layout is cleared and the grown header is
// written to the slot not in use and fenced, as every header change is.
// A crash before that fence leaves the old header and a file longer than
// it says, which Open accepts and the next growth reuses; a crash after it
// leaves the grown pool. The new slabs lie above the high-water mark, so
// nothing reads them before an allocation initialises them. size must be
// a multiple of layout.GrowthUnit; the error wraps pmemgo.ErrNoSpace when
// it exceeds the pool's MaxSize and device.ErrNoGrowth when the device
// cannot grow.
func (p *Pool) Grow(size uint64) error {
	if p.ro {
		return fmt.Errorf("grow: %w", pmemgo.ErrReadOnly)
	}
	nh, err := layout.Grown(p.Header, size)
	if err != nil {
		return err
	}
	g, ok := p.Dev.(device.Grower)
	if !ok {
		return fmt.Errorf("grow to %d bytes: the %T device does not grow pools: %w", size, p.Dev, device.ErrNoGrowth)
	}
	if err := p.MarkOpen(); err != nil {
		return err
	}
	if err := g.Grow(int(size)); err != nil {
		return fmt.Errorf("grow to %d bytes: %w", size, err)
	}
	// The space may hold what an earlier growth interrupted by a crash
	// left; only the summary region is ever read without being written
	// first, and a summary is trusted only when bound to the header
	// anyway, but a cleared one costs one line.
	layout.ClearSummary(p.Dev.Bytes()[nh.SumOff:])
	p.Dev.Flush(int(nh.SumOff), 8)
	return p.WriteHeader(nh)
}
