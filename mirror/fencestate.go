package mirror

import (
	"errors"
	"fmt"
	"os"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// The fencing state of a replicated pool is what keeps older primaries
// out: the newest epoch seen, and the position (epoch, sequence number,
// chain value) of a state the pool file held. The journal carries it too,
// but a journal can be lost or damaged, and a replica that forgot the
// epoch it has seen would accept an old primary again. So it is also kept
// in its own file, U.fence, in two checksummed slots written one after the
// other, each made durable before the next: damage to one is logged and
// the other used; with both lost the pool is not served until an operator
// resets its fencing (pmemctl replica reset-fencing).
//
// Slot layout (little-endian), at offsets 0 and fenceSlot:
//
//	[0, 4)    magic "PMRF"
//	[4, 8)    version
//	[8, 16)   counter, one more at each write
//	[16, 24)  newest epoch seen
//	[24, 32)  epoch of the position
//	[32, 40)  sequence number of the position
//	[40, 72)  chain value of the position
//	[72, 80)  xxhash64 of bytes [0, 72)
const (
	fenceMagic   = "PMRF"
	fenceVersion = 1
	fenceSize    = 80
	fenceSlot    = 512
)

// fence is a pool's fencing state.
type fence struct {
	counter          uint64
	seen, epoch, seq uint64
	chain            wire.Chain
}

// errFenceLost is returned by readFence when the file exists but neither
// slot is valid.
var errFenceLost = errors.New("fencing state lost: both copies are damaged")

func fencePath(base string) string { return base + ".fence" }

func (f *fence) encode(b []byte) {
	clear(b[:fenceSize])
	copy(b, fenceMagic)
	le.PutUint32(b[4:], fenceVersion)
	le.PutUint64(b[8:], f.counter)
	le.PutUint64(b[16:], f.seen)
	le.PutUint64(b[24:], f.epoch)
	le.PutUint64(b[32:], f.seq)
	copy(b[40:], f.chain[:])
	le.PutUint64(b[72:], xxhash.Sum64(b[:72]))
}

func decodeFence(b []byte) (fence, error) {
	switch {
	case len(b) < fenceSize:
		return fence{}, fmt.Errorf("%d of %d bytes", len(b), fenceSize)
	case string(b[:4]) != fenceMagic:
		return fence{}, fmt.Errorf("magic %q", b[:4])
	case le.Uint64(b[72:]) != xxhash.Sum64(b[:72]):
		return fence{}, errors.New("checksum fails")
	case le.Uint32(b[4:]) != fenceVersion:
		return fence{}, fmt.Errorf("version %d", le.Uint32(b[4:]))
	}
	f := fence{counter: le.Uint64(b[8:]), seen: le.Uint64(b[16:]), epoch: le.Uint64(b[24:]), seq: le.Uint64(b[32:])}
	copy(f.chain[:], b[40:])
	return f, nil
}

// readFence reads the fencing state at base. exists is false when there
// is no file. A damaged slot is passed to bad and rewritten from the other.
func readFence(base string, bad func(slot int, err error)) (f fence, exists bool, err error) {
	b, err := os.ReadFile(fencePath(base))
	if errors.Is(err, os.ErrNotExist) {
		return fence{}, false, nil
	}
	if err != nil {
		return fence{}, true, err
	}
	var slots [2]fence
	var errs [2]error
	for i := range slots {
		lo := min(len(b), i*fenceSlot)
		slots[i], errs[i] = decodeFence(b[lo:min(len(b), lo+fenceSize)])
		if errs[i] != nil && bad != nil {
			bad(i, errs[i])
		}
	}
	switch {
	case errs[0] != nil && errs[1] != nil:
		return fence{}, true, fmt.Errorf("%s: %w", fencePath(base), errFenceLost)
	case errs[0] != nil:
		f = slots[1]
	case errs[1] != nil || slots[0].counter >= slots[1].counter:
		// Slot 0 is written first: when the counters differ, a write was
		// interrupted between the slots and slot 0 is the newer.
		f = slots[0]
	default:
		f = slots[1]
	}
	if errs[0] != nil || errs[1] != nil || slots[0] != slots[1] {
		return f, true, writeFence(base, &f)
	}
	return f, true, nil
}

// writeFence makes f the fencing state at base, durably, one slot after
// the other; f's counter is advanced.
func writeFence(base string, f *fence) error {
	file, err := os.OpenFile(fencePath(base), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("fencing state: %w", err)
	}
	defer file.Close()
	f.counter++
	var b [fenceSize]byte
	f.encode(b[:])
	for i := range 2 {
		if _, err := file.WriteAt(b[:], int64(i*fenceSlot)); err != nil {
			return fmt.Errorf("fencing state %s: %w", file.Name(), err)
		}
		if err := unix.Fdatasync(int(file.Fd())); err != nil {
			return fmt.Errorf("fencing state %s: %w", file.Name(), err)
		}
	}
	return nil
}

// resetFence gives the pool at base a fresh fencing state accepting any
// primary of epoch seen or newer, and forgets the journal's position, so
// that the next primary sends a whole copy of the pool.
func resetFence(base string, seen uint64) error {
	for i := range 2 {
		if err := os.Remove(journalPath(base, i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	old, _, _ := readFence(base, nil)
	f := fence{counter: old.counter, seen: seen}
	return writeFence(base, &f)
}
