package heap

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// mapper returns the Mapper an open with o uses.
func (o *Options) mapper() device.Mapper {
	m := o.Device
	if m == nil {
		m = device.Auto{}
		if o.ReadOnly {
			m = device.Private{}
		}
	}
	if o.Key != nil {
		return device.Sealed{Key: o.Key, OldKey: o.OldKey, Inner: m}
	}
	return m
}

// createMapper returns the Mapper that creates a pool with o.
func (o *Options) createMapper() device.Mapper {
	if o.Key != nil {
		return device.Sealed{Key: o.Key, Inner: o.Device}
	}
	return o.Device
}

// checkKey refuses a key of the wrong size before any file is touched.
func (o *Options) checkKey() error {
	if o.Key != nil && len(o.Key) != seal.KeySize {
		return fmt.Errorf("Options.Key has %d bytes, want %d: %w", len(o.Key), seal.KeySize, pmemgo.ErrBadKey)
	}
	if o.OldKey != nil && len(o.OldKey) != seal.KeySize {
		return fmt.Errorf("Options.OldKey has %d bytes, want %d: %w", len(o.OldKey), seal.KeySize, pmemgo.ErrBadKey)
	}
	return nil
}

// Sealed reports whether the pool file is sealed (opened with a key).
func (h *Heap) Sealed() bool { return h.poolKey() != nil }

// poolKey returns the pool key, nil for a plain pool.
func (h *Heap) poolKey() []byte {
	if k := h.key.Load(); k != nil {
		return *k
	}
	return nil
}

// rekeyStep is the pool span one step of RotateKey reseals under the
// writer lock: 4096 lines, about 0.6 ms of sealing, so that commits wait
// little between steps.
const rekeyStep = 4096 * seal.LineSize

// RotateKey reseals every line of a sealed pool under newKey, in steps
// that each run as a transaction of their own: commits interleave with
// them, and a mirror replicates each step, so a replica rotates with the
// pool. Run it in a goroutine to have it in the background; it returns
// once the pool is sealed under newKey alone, or ctx is done.
//
// Until it returns, the pool holds records under both keys: an open
// needs newKey as Options.Key and the old key as Options.OldKey, and
// RotateKey(newKey) on that open finishes the rotation. A crash at any
// point leaves the pool readable so.
func (h *Heap) RotateKey(ctx context.Context, newKey []byte) error {
	if h.poolKey() == nil {
		return fmt.Errorf("rotate key: the pool is not sealed: %w", pmemgo.ErrBadKey)
	}
	if h.ro {
		return fmt.Errorf("rotate key: %w", pmemgo.ErrReadOnly)
	}
	if len(newKey) != seal.KeySize {
		return fmt.Errorf("rotate key: new key has %d bytes, want %d: %w", len(newKey), seal.KeySize, pmemgo.ErrBadKey)
	}
	if err := h.Update(func(*Tx) error { return device.BeginRekey(h.dev, newKey) }); err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	for off := 0; off < len(h.mem); off += rekeyStep {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("rotate key: stopped at pool offset %d: %w", off, err)
		}
		err := h.Update(func(*Tx) error {
			if _, err := device.Reseal(h.dev, off, rekeyStep); err != nil {
				return err
			}
			return h.dev.Fence()
		})
		if err != nil {
			return fmt.Errorf("rotate key: reseal at pool offset %d: %w", off, err)
		}
	}
	err := h.Update(func(*Tx) error {
		if err := device.EndRekey(h.dev); err != nil {
			return err
		}
		key := bytes.Clone(newKey)
		h.key.Store(&key)
		return nil
	})
	if err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	return nil
}

// sealedWriter seals the plaintext pool image written to it, from offset
// 0 on, into a sealed file written to w: the header, then one record per
// line; finish then writes the digest record of what was written. A
// backup of a sealed pool is sealed too.
type sealedWriter struct {
	w      io.Writer
	sealer *seal.Sealer
	dg     *seal.Digester
	digest uint64
	off    int64
	line   [seal.LineSize]byte
	fill   int
	rec    [seal.RecordSize]byte
}

func newSealedWriter(w io.Writer, key []byte, uuid [16]byte, size int64) (*sealedWriter, error) {
	keys, err := seal.NewKeys(key)
	if err != nil {
		return nil, err
	}
	page, sealer, dkey, err := keys.NewFile(uuid, size)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(page); err != nil {
		return nil, err
	}
	return &sealedWriter{w: w, sealer: sealer, dg: seal.NewDigester(dkey)}, nil
}

// Write seals p's whole lines, keeping a partial line for the next call.
func (s *sealedWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := copy(s.line[s.fill:], p)
		s.fill += k
		p = p[k:]
		if s.fill < seal.LineSize {
			break
		}
		s.digest ^= s.dg.Line(s.off, s.line[:])
		s.sealer.Seal(s.rec[:], s.off, s.line[:])
		if _, err := s.w.Write(s.rec[:]); err != nil {
			return n - len(p), err
		}
		s.off += seal.LineSize
		s.fill = 0
	}
	return n, nil
}

// finish writes into f, the file written, the exact digest record of the
// lines written.
func (s *sealedWriter) finish(f io.WriterAt) error {
	s.sealer.SealDigest(s.rec[:], seal.DigestState{Kind: seal.DigestExact, Digest: s.digest})
	_, err := f.WriteAt(s.rec[:], seal.DigestOff)
	return err
}
