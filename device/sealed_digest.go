package device

import (
	"fmt"

	"github.com/pmemgo/pmemgo/internal/seal"
)

// mark writes, before this session's first line reaches the file, a
// digest record saying the pool is open for writing, and fences it: from
// then until Close writes the exact digest, a crash can leave records of
// several fences' states, which no digest describes.
func (d *sealedDevice) mark() {
	d.marked = true
	d.sealer.SealDigest(d.recs[seal.DigestOff:], seal.DigestState{Kind: seal.DigestOpen})
	d.inner.Flush(seal.DigestOff, seal.RecordSize)
	if err := d.inner.Fence(); err != nil {
		d.markErr = fmt.Errorf("sealed file: write the open digest record: %w", err)
	}
}

// closeDigest writes the exact digest of the file when everything
// written back was fenced, so that the next open can check every line.
// A Close with write-backs not fenced is a crash, as on every device:
// they may be lost, and the open record stays.
func (d *sealedDevice) closeDigest() error {
	if !d.marked || d.markErr != nil || d.pending {
		return nil
	}
	d.sealer.SealDigest(d.recs[seal.DigestOff:], seal.DigestState{Kind: seal.DigestExact, Digest: d.digest})
	d.inner.Flush(seal.DigestOff, seal.RecordSize)
	if err := d.inner.Fence(); err != nil {
		return fmt.Errorf("sealed file: write the digest record: %w", err)
	}
	return nil
}

// SealedDigest returns a digest record, for the file offset
// seal.DigestOff, that says the sealed file of d, a device made by Sealed,
// holds exactly what its lines hold now, as of batch seq of epoch: a
// mirror ships it with each batch, so that a replica's file always has an
// exact digest, which its key holder checks at open. It is sealed under
// d's key in d's session, so it must be called where a Flush could be
// (under the heap's writer lock).
func SealedDigest(d Device, epoch, seq uint64) ([]byte, error) {
	s, err := sealedOf(d)
	if err != nil {
		return nil, err
	}
	rec := make([]byte, seal.RecordSize)
	s.sealer.SealDigest(rec, seal.DigestState{Kind: seal.DigestExact, Epoch: epoch, Seq: seq, Digest: s.digest})
	return rec, nil
}

// SealedDigestChecked reports, for a device made by Sealed, whether its
// open checked every line against the file's digest: true when the file
// had an exact digest (closed cleanly, a replica, a backup), false when
// the last session that wrote it did not close it (a crash), so that
// there was no digest to check. ok is false for any other device.
func SealedDigestChecked(d Device) (checked, ok bool) {
	s, ok := d.(*sealedDevice)
	if !ok {
		return false, false
	}
	return s.found.Kind == seal.DigestExact, true
}
