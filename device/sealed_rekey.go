package device

import (
	"errors"
	"fmt"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// A key rotation reseals every record of a sealed pool under a new key,
// in steps, while the pool stays in use:
//
//  1. BeginRekey makes the header name the new key and the old one, and
//     fences it, before anything is sealed under the new key: from then
//     on an open needs both keys (Sealed.OldKey) and tries both.
//  2. Reseal, over every range, reseals each record not blank under the
//     new key; a fence makes the step durable.
//  3. EndRekey, once every record was resealed and fenced, makes the
//     header name the new key alone.
//
// The header and the records go through the inner device like any
// record, so a mirror tracking the sealed file ships them: a replica
// rotates with its primary. A crash at any point leaves each record
// sealed under one of the two keys, and the header naming both until
// EndRekey's fence.

var errNotSealed = errors.New("pmemgo: not a sealed device")

// sealedOf returns d as the device made by Sealed.
func sealedOf(d Device) (*sealedDevice, error) {
	s, ok := d.(*sealedDevice)
	if !ok {
		return nil, errNotSealed
	}
	if s.closed {
		return nil, ErrClosed
	}
	return s, nil
}

// BeginRekey starts rotating the key of d, a device made by Sealed, to
// newKey (step 1). Beginning again the rotation to the key a rotation
// already goes to is allowed, to finish one that a crash interrupted; a
// rotation to another key while one is under way is refused.
func BeginRekey(d Device, newKey []byte) error {
	s, err := sealedOf(d)
	if err != nil {
		return err
	}
	keys, err := seal.NewKeys(newKey)
	if err != nil {
		return err
	}
	switch {
	case s.prev != nil && keys.ID() == s.keys.ID():
		return nil
	case s.prev != nil:
		return fmt.Errorf("a rotation to key id %x is under way; finish it first: %w", s.hdr.KeyID[:8], pmemgo.ErrBadKey)
	case keys.ID() == s.keys.ID():
		return fmt.Errorf("the new key is the pool's key: %w", pmemgo.ErrBadKey)
	}
	sealer, err := keys.NewSealer(s.hdr.UUID)
	if err != nil {
		return err
	}
	if !s.marked {
		s.mark()
	}
	hdr := s.hdr
	hdr.Rekey(keys, s.keys)
	if err := s.writeHeader(hdr); err != nil {
		return err
	}
	s.keys, s.prev, s.sealer, s.helpers = keys, s.keys, sealer, nil
	// The digest key and the digest records go under the new key with the
	// lines; until the next fence an open finds them under either.
	sealer.SealDigestKey(s.recs[seal.DigestKeyOff:], s.dkey)
	sealer.SealDigest(s.recs[seal.DigestOff:], seal.DigestState{Kind: seal.DigestOpen})
	s.inner.Flush(seal.DigestKeyOff, 2*seal.RecordSize)
	s.pending = true
	return nil
}

// Reseal reseals under the current key the records of the lines of
// [off, off+n) of d that are not blank, and flushes them through the
// inner device (step 2); the next Fence makes them durable. The
// plaintext does not change, so d's subscribers are not told. It returns
// the number of records resealed.
func Reseal(d Device, off, n int) (int, error) {
	s, err := sealedOf(d)
	if err != nil {
		return 0, err
	}
	lo, hi, ok := lineSpan(off, n, len(s.plain))
	if !ok {
		return 0, nil
	}
	done, run := 0, int64(-1)
	flush := func(end int64) {
		if run >= 0 {
			s.inner.Flush(int(run), int(end-run))
			run = -1
		}
	}
	for l := lo; l < hi; l += LineSize {
		rec := seal.RecordOff(int64(l))
		if seal.IsBlank(s.recs[rec:]) {
			flush(rec)
			continue
		}
		s.sealer.Seal(s.recs[rec:], int64(l), s.plain[l:])
		if run < 0 {
			run = rec
		}
		done++
	}
	flush(seal.RecordOff(int64(hi)))
	if done > 0 {
		s.pending = true
	}
	return done, nil
}

// EndRekey ends the rotation of d's key (step 3): the header names the
// new key alone. Every record must have been resealed and fenced.
func EndRekey(d Device) error {
	s, err := sealedOf(d)
	if err != nil {
		return err
	}
	if s.prev == nil {
		return nil
	}
	hdr := s.hdr
	hdr.Rekey(s.keys, nil)
	if err := s.writeHeader(hdr); err != nil {
		return err
	}
	s.prev = nil
	return nil
}

// writeHeader writes hdr over the sealed file's header through the inner
// device and fences. The used part of a header lies in one sector, so a
// crash leaves the old header or the new one.
func (s *sealedDevice) writeHeader(hdr seal.Header) error {
	hdr.Encode(s.recs[:seal.HeaderSize])
	s.inner.Flush(0, seal.RecordSize)
	if err := s.inner.Fence(); err != nil {
		return fmt.Errorf("write sealed header: %w", err)
	}
	s.hdr = hdr
	return nil
}
