package remote

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// rotateChunk is how many bytes of records a rotation reseals per step.
const rotateChunk = MaxRead

// rotateHook, if set, is called after each step of a rotation with the
// region offset reached (tests interrupt rotations with it).
var rotateHook func(off uint64)

// RotateKey reseals the sealed remote pool at rawURL (pmem://ADDR/NAME,
// or a name placed by opts.Manager) under newKey, on the node and in the
// local backup opts.Backup, in the steps of a local pool's rotation (see
// heap.RotateKey): the header first names both keys, then every record is
// resealed, then the header names the new key alone. opts.Heap.Key is the
// pool's key.
//
// The rotation is offline: it claims the region, so no session may have
// the pool open (ErrBusy), and each record passes through this process
// once. A pool's process pages its lines in on demand and seals them as
// its fences write them back; resealing under it would need its agent to
// open records under either key and every fence to agree with the
// rotation's progress, for no gain over a pass that reads each record
// once anyway.
//
// An interrupted rotation leaves a pool that opens with neither key
// alone: call RotateKey again with the same keys (or opts.Heap.Key the
// new key and opts.Heap.OldKey the old one) and it finishes. Every record
// the node holds is written to the backup as it is resealed, so the
// backup is complete afterwards; other clients' backups no longer count
// as complete, and serve only the pages they fetch again.
func RotateKey(ctx context.Context, rawURL string, opts *Options, newKey []byte) error {
	if opts == nil || opts.Heap.Key == nil {
		return fmt.Errorf("rotate key of %s: no key (Options.Heap.Key): %w", rawURL, pmemgo.ErrBadKey)
	}
	if len(newKey) != seal.KeySize {
		return fmt.Errorf("rotate key of %s: new key has %d bytes, want %d: %w", rawURL, len(newKey), seal.KeySize, pmemgo.ErrBadKey)
	}
	if !IsURL(rawURL) {
		url, _, err := resolveName(rawURL, opts)
		if err != nil {
			return err
		}
		rawURL = url
	}
	o := *opts
	o.Size, o.Heap.OldKey = 0, nil
	s, err := startSession(rawURL, &o, false)
	if err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	// The claim is released before the call returns, so that the pool
	// can be opened at once.
	defer s.closeWithin(releaseWait)
	rk := &rekey{s: s}
	if err := rk.run(ctx, opts.Heap.Key, opts.Heap.OldKey, newKey); err != nil {
		return fmt.Errorf("rotate key of %s: %w", rawURL, err)
	}
	return nil
}

// rekey is one rotation's pass over a region.
type rekey struct {
	s      *session
	backup *os.File
	open   *seal.Opener
	sealer *seal.Sealer
}

func (rk *rekey) run(ctx context.Context, cur, old, newKey []byte) error {
	s := rk.s
	f, err := s.openBackup()
	if err != nil {
		return err
	}
	defer f.Close()
	rk.backup = f
	page := make([]byte, seal.HeaderSize)
	if _, err := rk.read(ctx, 0, page); err != nil {
		return err
	}
	hdr, err := seal.DecodeHeader(page)
	if err != nil {
		return fmt.Errorf("region %s: %w", s.name, err)
	}
	if seal.FileSize(int64(hdr.PoolSize)) != int64(s.size) {
		return fmt.Errorf("region %s of %d bytes holds a sealed pool of %d: %w", s.name, s.size, hdr.PoolSize, pmemgo.ErrCorrupt)
	}
	next, prev, done, err := rotationKeys(&hdr, cur, old, newKey)
	if err != nil || done {
		return err
	}
	if rk.sealer, err = next.NewSealer(hdr.UUID); err != nil {
		return err
	}
	rk.open = next.NewRotatingOpener(prev, hdr.UUID)
	if !hdr.Rotating() {
		// Nothing may be sealed under the new key before the header
		// names it: an open would find records under neither key.
		hdr.Rekey(next, prev)
		if err := rk.writeHeader(ctx, &hdr, page); err != nil {
			return err
		}
	}
	if err := rk.resealDigests(ctx, page); err != nil {
		return err
	}
	for off := uint64(seal.HeaderSize); off < s.size; off += rotateChunk {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stopped at region offset %d: %w", off, err)
		}
		if err := rk.reseal(ctx, off, min(rotateChunk, s.size-off)); err != nil {
			return err
		}
		if rotateHook != nil {
			rotateHook(off)
		}
	}
	hdr.Rekey(next, nil)
	if err := rk.writeHeader(ctx, &hdr, page); err != nil {
		return err
	}
	// The backup now holds every record the node does, and this session
	// wrote the region last.
	s.side.Complete, s.side.Region = true, s.name
	return s.side.save()
}

// rotationKeys returns the keys of the rotation the header hdr asks for:
// from prev to next, the key in newKey, and done when the pool is sealed
// under newKey alone already. cur is the key given; old, if not nil, the
// key an interrupted rotation rotates from.
func rotationKeys(hdr *seal.Header, cur, old, newKey []byte) (next, prev *seal.Keys, done bool, err error) {
	if next, err = seal.NewKeys(newKey); err != nil {
		return nil, nil, false, err
	}
	given := []*seal.Keys{}
	for _, k := range [][]byte{cur, old} {
		if k == nil {
			continue
		}
		ks, err := seal.NewKeys(k)
		if err != nil {
			return nil, nil, false, err
		}
		given = append(given, ks)
	}
	find := func(id [16]byte) *seal.Keys {
		for _, k := range given {
			if k.ID() == id {
				return k
			}
		}
		return nil
	}
	switch {
	case hdr.KeyID == next.ID() && !hdr.Rotating():
		return next, nil, true, next.Verify(hdr)
	case hdr.KeyID == next.ID():
		if prev = find(hdr.PrevKeyID); prev == nil {
			return nil, nil, false, fmt.Errorf("the rotation to this key under way is from key id %x, which was not given: %w", hdr.PrevKeyID[:8], pmemgo.ErrBadKey)
		}
		return next, prev, false, next.Verify(hdr)
	case hdr.Rotating():
		return nil, nil, false, fmt.Errorf("a rotation to key id %x is under way; finish it first: %w", hdr.KeyID[:8], pmemgo.ErrBadKey)
	}
	if prev = find(hdr.KeyID); prev == nil {
		return nil, nil, false, fmt.Errorf("the pool is sealed with key id %x, not the key given: %w", hdr.KeyID[:8], pmemgo.ErrBadKey)
	}
	return next, prev, false, prev.Verify(hdr)
}

// read reads the records at region offset off into dst from the node,
// or from the backup if the node's copy is damaged and the backup is
// complete. It reports whether they came from the backup.
func (rk *rekey) read(ctx context.Context, off uint64, dst []byte) (bool, error) {
	s := rk.s
	err := s.cl.read(ctx, s.epoch, s.region, off, dst, prioDemand)
	if err == nil || !errors.Is(err, pmemgo.ErrCorrupt) || !s.side.Complete {
		return false, err
	}
	logger(s.opts.Heap.Logger).Warn("pmemgo remote: the node's copy is damaged; the backup's is resealed",
		"node", s.addr, "region", s.name, "err", err)
	_, err = rk.backup.ReadAt(dst, int64(off))
	return true, err
}

// write writes runs to the node and whole, records at region offset at,
// to the backup, durably in both.
func (rk *rekey) write(ctx context.Context, runs []run, at uint64, whole []byte) error {
	s := rk.s
	for _, b := range batches(runs, MaxWrite) {
		if err := s.cl.write(ctx, s.epoch, s.region, b); err != nil {
			return err
		}
	}
	if _, err := rk.backup.WriteAt(whole, int64(at)); err != nil {
		return fmt.Errorf("backup %s: %w", rk.backup.Name(), err)
	}
	if err := unix.Fdatasync(int(rk.backup.Fd())); err != nil {
		return fmt.Errorf("backup %s: fdatasync: %w", rk.backup.Name(), err)
	}
	return nil
}

// writeHeader writes hdr into page, the region's first page, and the
// page to the node and the backup.
func (rk *rekey) writeHeader(ctx context.Context, hdr *seal.Header, page []byte) error {
	hdr.Encode(page[:seal.HeaderSize])
	return rk.write(ctx, []run{{off: 0, data: page}}, 0, page)
}

// resealDigests reseals the digest key and digest records of page, the
// region's first page, under the new key.
func (rk *rekey) resealDigests(ctx context.Context, page []byte) error {
	keyRec := page[seal.DigestKeyOff : seal.DigestKeyOff+seal.RecordSize]
	if !seal.IsBlank(keyRec) {
		dkey, err := rk.open.OpenDigestKey(keyRec)
		if err != nil {
			return err
		}
		rk.sealer.SealDigestKey(keyRec, dkey)
	}
	dgRec := page[seal.DigestOff : seal.DigestOff+seal.RecordSize]
	if !seal.IsBlank(dgRec) {
		st, err := rk.open.OpenDigest(dgRec)
		if err != nil {
			return err
		}
		rk.sealer.SealDigest(dgRec, st)
	}
	return rk.write(ctx, []run{{off: 0, data: page}}, 0, page)
}

// reseal reseals the records of [off, off+n) of the region. The node is
// sent the records that are not blank, or every one if its copy was
// damaged; the backup gets them all.
func (rk *rekey) reseal(ctx context.Context, off, n uint64) error {
	recs := make([]byte, n)
	fromBackup, err := rk.read(ctx, off, recs)
	if err != nil {
		return err
	}
	var plain [seal.LineSize]byte
	var runs []run
	for i := uint64(0); i < n; i += seal.RecordSize {
		rec := recs[i : i+seal.RecordSize]
		if seal.IsBlank(rec) {
			continue
		}
		at := int64(off + i)
		line := (at - seal.HeaderSize) / seal.RecordSize * seal.LineSize
		if err := rk.open.Open(plain[:], rec, line, at); err != nil {
			return err
		}
		rk.sealer.Seal(rec, line, plain[:])
		if k := len(runs); k > 0 && runs[k-1].off+uint64(len(runs[k-1].data)) == uint64(at) {
			runs[k-1].data = recs[runs[k-1].off-off : i+seal.RecordSize]
		} else {
			runs = append(runs, run{off: uint64(at), data: rec})
		}
	}
	if fromBackup {
		runs = []run{{off: off, data: recs}}
	}
	return rk.write(ctx, runs, off, recs)
}
