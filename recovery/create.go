package recovery

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// Create lays out a new, empty pool in f, which should be empty: it is
// sized to g.Size, the heap state and the undo log are initialised and made
// durable, and only then are the header slots written. Until they are
// durable the file is not a pool, so a crash during Create leaves a file
// that Open rejects, never a half-made pool.
func Create(f *os.File, g layout.Geometry, mapper device.Mapper) (layout.Header, error) {
	h, err := layout.NewHeader(g)
	if err != nil {
		return h, err
	}
	if _, err := rand.Read(h.UUID[:]); err != nil {
		return h, fmt.Errorf("pool uuid: %w", err)
	}
	if mapper == nil {
		mapper = device.Msync{}
	}
	if ff, ok := mapper.(device.FileFormat); ok {
		if err := ff.Format(f, int64(h.Size), h.UUID); err != nil {
			return h, fmt.Errorf("format pool file: %w", err)
		}
	} else if err := f.Truncate(int64(h.Size)); err != nil {
		return h, fmt.Errorf("size pool file: %w", err)
	}
	// The base recorded is the start of a free range as large as the pool
	// may grow, so that an open right after finds room there to reserve.
	dev, err := mapper.Map(f, int(h.Size), device.MapRequest{Reserve: int(min(h.MaxSize, maxReserve))})
	if err != nil {
		return h, fmt.Errorf("map new pool: %w", err)
	}
	mem := dev.Bytes()
	h.Base = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	var s layout.State
	s.Encode(mem[layout.StateOff:])
	dev.Flush(layout.StateOff, layout.StateSize)
	layout.InitLog(mem[h.LogOff:])
	dev.Flush(int(h.LogOff), layout.LogEntriesOff)
	if err := dev.Fence(); err != nil {
		return h, errors.Join(err, dev.Close())
	}
	for _, seq := range []uint64{1, 2} {
		h.Seq = seq
		off := int(layout.SlotOff(int(seq % 2)))
		h.Encode(mem[off:])
		dev.Flush(off, layout.HeaderBytes)
	}
	if err := dev.Fence(); err != nil {
		return h, errors.Join(err, dev.Close())
	}
	return h, dev.Close()
}
