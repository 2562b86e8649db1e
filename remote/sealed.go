package remote

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// A remote pool opened with a key (Options.Heap.Key) is sealed: its
// region on the node, and the local backup, are a sealed pool file (see
// internal/seal), one AEAD record per 64-byte line bound to the pool's
// UUID and the line's offset. The node stores, serves and resynchronises
// records without the key. The pool's process seals the lines a fence
// writes back; the agent opens the records of the pages it fetches, from
// the node or the backup, before installing the plaintext. A record that
// does not authenticate is never installed.

// sealing is what a sealed remote pool seals and opens its lines with.
type sealing struct {
	key    []byte
	uuid   [16]byte
	sealer *seal.Sealer // the device's, used under its lock
	opener *seal.Opener
	// marked is set once this open wrote the open digest record.
	marked bool
}

// newSealing checks the sealed header of f, the backup, against key.
func newSealing(key []byte, f *os.File) (*sealing, seal.Header, error) {
	keys, err := seal.NewKeys(key)
	if err != nil {
		return nil, seal.Header{}, err
	}
	hdr, err := device.ReadSealedHeader(f)
	if err != nil {
		return nil, hdr, err
	}
	if err := keys.Verify(&hdr); err != nil {
		return nil, hdr, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if hdr.Rotating() {
		return nil, hdr, fmt.Errorf("%s: %w", f.Name(), errRotating(&hdr))
	}
	sealer, err := keys.NewSealer(hdr.UUID)
	if err != nil {
		return nil, hdr, err
	}
	return &sealing{key: key, uuid: hdr.UUID, sealer: sealer, opener: keys.NewOpener(hdr.UUID)}, hdr, nil
}

// recordOff returns the region offset of the record of the line at pool
// offset off: a run of lines has a run of records, twice as long.
func recordOff(off uint64) uint64 { return uint64(seal.RecordOff(int64(off))) }

// sealRuns returns the records of runs, lines of plaintext. The first
// fence of an open also writes the sealed file's digest record as open
// (see internal/seal): a remote pool's process pages its lines in on
// demand, so it cannot keep the digest of every line as a local sealed
// pool does, and a copy of the region (a download, the backup) is then
// opened without a digest to check rather than refused.
func (z *sealing) sealRuns(runs []run) []run {
	out := make([]run, len(runs), len(runs)+1)
	if !z.marked {
		z.marked = true
		rec := make([]byte, seal.RecordSize)
		z.sealer.SealDigest(rec, seal.DigestState{Kind: seal.DigestOpen})
		out = append([]run{{off: seal.DigestOff, data: rec}}, out...)
	}
	for i, r := range runs {
		i += len(out) - len(runs)
		recs := make([]byte, len(r.data)/LineSize*seal.RecordSize)
		for l := 0; l < len(r.data); l += LineSize {
			z.sealer.Seal(recs[l/LineSize*seal.RecordSize:], int64(r.off)+int64(l), r.data[l:])
		}
		out[i] = run{off: recordOff(r.off), data: recs}
	}
	return out
}

// openRecords opens recs, the records of the lines at pool offset off,
// into plain. A record that does not authenticate is an error wrapping
// pmemgo.ErrCorrupt that names its pool and region offsets.
func openRecords(o *seal.Opener, plain, recs []byte, off uint64) error {
	for l := 0; l < len(plain); l += LineSize {
		at := int64(off) + int64(l)
		rec := recs[l/LineSize*seal.RecordSize:][:seal.RecordSize]
		if err := o.Open(plain[l:l+LineSize], rec, at, seal.RecordOff(at)); err != nil {
			return err
		}
	}
	return nil
}

// sealedMapper is the Mapper of a sealed remote pool: the backup file is
// sealed, so the heap reads the pool's header through it.
type sealedMapper struct{ mapper }

// Format is not used: a sealed remote pool is created as a local sealed
// pool file, then uploaded.
func (m *sealedMapper) Format(f *os.File, size int64, uuid [16]byte) error {
	return device.Sealed{Key: m.s.opts.Heap.Key}.Format(f, size, uuid)
}

// PoolReader reads the plaintext of the backup's records.
func (m *sealedMapper) PoolReader(f *os.File) (io.ReaderAt, int64, error) {
	return device.Sealed{Key: m.s.opts.Heap.Key}.PoolReader(f)
}

// errRotating is the error of opening a sealed remote pool whose key
// rotation was interrupted.
func errRotating(hdr *seal.Header) error {
	return fmt.Errorf("the rotation of the pool's key from key id %x to key id %x was interrupted: finish it (remote.RotateKey, pmemctl key rotate) before opening the pool: %w",
		hdr.PrevKeyID[:8], hdr.KeyID[:8], pmemgo.ErrBadKey)
}

// checkSealedHead checks the start of a sealed region, its header and the
// records after it, before they replace the backup's copy: a header made
// with another key is pmemgo.ErrBadKey, a damaged record an error naming
// its offsets.
func checkSealedHead(key, head []byte) error {
	keys, err := seal.NewKeys(key)
	if err != nil {
		return err
	}
	hdr, err := seal.DecodeHeader(head)
	if errors.Is(err, pmemgo.ErrNotPool) {
		return fmt.Errorf("the region is not a sealed pool, but a key was given: %w", pmemgo.ErrBadKey)
	}
	if err != nil {
		return err
	}
	if hdr.Rotating() && (hdr.KeyID == keys.ID() || hdr.PrevKeyID == keys.ID()) {
		return errRotating(&hdr)
	}
	if err := keys.Verify(&hdr); err != nil {
		return err
	}
	recs := head[seal.HeaderSize:]
	recs = recs[:len(recs)/seal.RecordSize*seal.RecordSize]
	plain := make([]byte, len(recs)/2)
	return openRecords(keys.NewOpener(hdr.UUID), plain, recs, 0)
}
