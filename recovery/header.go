package recovery

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// ReadHeader reads both header slots of f and returns the current header.
// Of two valid slots the one with the higher sequence number wins. One
// invalid slot is tolerated only while the open mark is set, since it may
// then be a header write torn by a crash; after a clean close both slots
// were written, so an invalid one is corruption.
func ReadHeader(f *os.File) (layout.Header, error) {
	fi, err := f.Stat()
	if err != nil {
		return layout.Header{}, err
	}
	return ReadHeaderAt(f, fi.Size())
}

// ReadHeaderVia reads the current header of the pool in f as ReadHeader
// does, through mapper's FileFormat when it has one (a sealed file).
func ReadHeaderVia(f *os.File, mapper device.Mapper) (layout.Header, error) {
	ff, ok := mapper.(device.FileFormat)
	if !ok {
		return ReadHeader(f)
	}
	r, size, err := ff.PoolReader(f)
	if err != nil {
		return layout.Header{}, err
	}
	return ReadHeaderAt(r, size)
}

// ReadHeaderAt is ReadHeader for the pool bytes r holds, size of them.
func ReadHeaderAt(r io.ReaderAt, size int64) (layout.Header, error) {
	var slots [2][]byte
	var errs [2]error
	var hdrs [2]layout.Header
	for i := range slots {
		slots[i] = make([]byte, layout.HeaderBytes)
		n, err := readAt(r, slots[i], layout.SlotOff(i), size)
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			return layout.Header{}, fmt.Errorf("read header slot %c: %w", 'A'+i, err)
		case i == 0 && (n < layout.HeaderBytes || seal.IsSealed(slots[0])):
			return layout.Header{}, notPoolOrTruncated(slots[0][:n], size)
		}
		hdrs[i], errs[i] = layout.DecodeHeader(slots[i][:n])
	}
	var mark [8]byte
	if _, err := readAt(r, mark[:], layout.OpenMarkOff, size); err != nil && !errors.Is(err, io.EOF) {
		return layout.Header{}, fmt.Errorf("read open mark: %w", err)
	}
	if errs[0] == nil && uint64(size) < hdrs[0].Size {
		return hdrs[0], fmt.Errorf("file is %d bytes, its header records %d: %w", size, hdrs[0].Size, pmemgo.ErrTruncated)
	}
	h, err := chooseHeader(hdrs, errs, layout.OpenMark(mark[:]) != 0)
	if err != nil {
		return h, err
	}
	// A longer file is a growth interrupted between extending the file
	// and writing the header: the next growth reuses the space.
	if uint64(size) < h.Size {
		return h, fmt.Errorf("file is %d bytes, its header records %d: %w", size, h.Size, pmemgo.ErrTruncated)
	}
	return h, nil
}

// readAt reads p at off from r, which holds size bytes: a read past size
// is short, ending with io.EOF, whatever r would do there.
func readAt(r io.ReaderAt, p []byte, off, size int64) (int, error) {
	if off >= size {
		return 0, io.EOF
	}
	if rest := size - off; int64(len(p)) > rest {
		n, err := r.ReadAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return r.ReadAt(p, off)
}

func notPoolOrTruncated(head []byte, size int64) error {
	if seal.IsSealed(head) {
		return fmt.Errorf("file is a sealed (encrypted) pool: open it with its key: %w", pmemgo.ErrBadKey)
	}
	if len(head) >= len(layout.Magic) && string(head[:len(layout.Magic)]) == layout.Magic {
		return fmt.Errorf("file is %d bytes, too short for a pool header: %w", size, pmemgo.ErrTruncated)
	}
	return fmt.Errorf("file of %d bytes has no pool header: %w", size, pmemgo.ErrNotPool)
}

func chooseHeader(h [2]layout.Header, errs [2]error, open bool) (layout.Header, error) {
	slotErr := func(i int) error {
		return fmt.Errorf("header slot %c at offset %d: %w", 'A'+i, layout.SlotOff(i), errs[i])
	}
	for i := range errs {
		// A newer format is not ours to judge, even in one slot.
		if errors.Is(errs[i], pmemgo.ErrVersion) {
			return h[i], slotErr(i)
		}
	}
	switch {
	case errs[0] != nil && errs[1] != nil:
		if errors.Is(errs[0], pmemgo.ErrNotPool) && errors.Is(errs[1], pmemgo.ErrNotPool) {
			return h[0], slotErr(0)
		}
		return h[0], fmt.Errorf("no valid header: %w; %w", slotErr(0), slotErr(1))
	case errs[0] == nil && errs[1] == nil:
		cur, other := 0, 1
		if h[1].Seq > h[0].Seq {
			cur, other = 1, 0
		}
		if err := sameGeometry(&h[cur], &h[other]); err != nil {
			return h[cur], fmt.Errorf("header slots disagree: %w: %w", err, pmemgo.ErrCorrupt)
		}
		return h[cur], nil
	}
	good, bad := 0, 1
	if errs[0] != nil {
		good, bad = 1, 0
	}
	if !open {
		return h[good], fmt.Errorf("%w (the pool was closed cleanly, so both slots should be valid): %w", slotErr(bad), pmemgo.ErrCorrupt)
	}
	return h[good], nil
}

// sameGeometry checks that the slot in use, cur, describes the pool of the
// other slot, or that pool grown: a crash right after a growth's header
// write leaves the other slot with the size before it.
func sameGeometry(cur, other *layout.Header) error {
	if !layout.GrowthOf(other, cur) {
		return fmt.Errorf("slot with sequence %d and slot with sequence %d describe different pools", cur.Seq, other.Seq)
	}
	return nil
}
