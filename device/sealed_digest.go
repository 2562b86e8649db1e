package device

import (
	"fmt"
	"sync"

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
	info, ok := SealedDigestOf(d)
	return info.Checked, ok
}

// SealedDigestInfo is what a sealed device knows of its file's digest.
type SealedDigestInfo struct {
	// Digest is the keyed digest of what the device's lines hold now: two
	// devices whose lines hold the same plaintext under one pool have the
	// same Digest, whatever the nonces of their records.
	Digest uint64
	// Checked is set when the file had an exact digest record at open and
	// every line matched it (SealedDigestChecked); Found is then that
	// record's digest: the digest of the lines at open.
	Checked bool
	Found   uint64
	// Epoch and Seq name the replicated batch that the file's exact record
	// came with: zero for a record that a Close, a backup or a snapshot
	// image wrote.
	Epoch, Seq uint64
}

// SealedDigestOf returns, for a device made by Sealed, its digest and the
// record its file had at open; ok is false for any other device. It reads
// what Flush changes, so it must not run while another goroutine may
// flush (call it under the heap's writer lock, or with no writer).
func SealedDigestOf(d Device) (info SealedDigestInfo, ok bool) {
	s, ok := d.(*sealedDevice)
	if !ok {
		return info, false
	}
	info = SealedDigestInfo{Digest: s.digest, Checked: s.found.Kind == seal.DigestExact}
	if info.Checked {
		info.Found, info.Epoch, info.Seq = s.found.Digest, s.found.Epoch, s.found.Seq
	}
	return info, true
}

// parallelSealLines is the number of lines of a flush from which each
// more goroutine seals a part of it: sealing a line and its digest value
// costs about 0.4 us, so a part is worth a goroutine's start.
const parallelSealLines = 256

// sealHelper is the session and digester of a goroutine sealing part of
// a large flush.
type sealHelper struct {
	sealer *seal.Sealer
	dg     *seal.Digester
}

// sealLines seals the lines of [lo, hi) with s, keeps their digest values,
// and returns what they change of the digest.
func (d *sealedDevice) sealLines(s *seal.Sealer, dg *seal.Digester, lo, hi int) uint64 {
	var delta uint64
	for l := lo; l < hi; l += LineSize {
		e := dg.Line(int64(l), d.plain[l:])
		delta ^= d.lineDig[l/LineSize] ^ e
		d.lineDig[l/LineSize] = e
		s.Seal(d.recs[seal.RecordOff(int64(l)):], int64(l), d.plain[l:])
	}
	return delta
}

// sealParallel seals [lo, hi) in w parts at once: the device's session
// seals the first, helpers the others.
func (d *sealedDevice) sealParallel(lo, hi, w int) {
	for len(d.helpers) < w-1 {
		s, err := d.keys.NewSealer(d.hdr.UUID)
		if err != nil {
			// No session for a helper (no randomness): seal it all here.
			d.digest ^= d.sealLines(d.sealer, d.dg, lo, hi)
			return
		}
		d.helpers = append(d.helpers, sealHelper{sealer: s, dg: seal.NewDigester(d.dkey)})
	}
	per := ((hi-lo)/LineSize + w - 1) / w * LineSize
	deltas := make([]uint64, w)
	var wg sync.WaitGroup
	for i := 1; i < w; i++ {
		a, b := lo+i*per, min(lo+(i+1)*per, hi)
		if a >= b {
			break
		}
		h := d.helpers[i-1]
		wg.Go(func() { deltas[i] = d.sealLines(h.sealer, h.dg, a, b) })
	}
	deltas[0] = d.sealLines(d.sealer, d.dg, lo, min(lo+per, hi))
	wg.Wait()
	for _, x := range deltas {
		d.digest ^= x
	}
}
