package heap

import (
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
		return device.Sealed{Key: o.Key, Inner: m}
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
	return nil
}

// Sealed reports whether the pool file is sealed (opened with a key).
func (h *Heap) Sealed() bool { return h.key != nil }

// sealedWriter seals the plaintext pool image written to it, from offset
// 0 on, into a sealed file written to w: the header, then one record per
// line. A backup of a sealed pool is sealed too.
type sealedWriter struct {
	w      io.Writer
	sealer *seal.Sealer
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
	hdr, err := seal.NewHeader(keys, uuid, size)
	if err != nil {
		return nil, err
	}
	sealer, err := keys.NewSealer(uuid)
	if err != nil {
		return nil, err
	}
	b := make([]byte, seal.HeaderSize)
	hdr.Encode(b)
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	return &sealedWriter{w: w, sealer: sealer}, nil
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
		s.sealer.Seal(s.rec[:], s.off, s.line[:])
		if _, err := s.w.Write(s.rec[:]); err != nil {
			return n - len(p), err
		}
		s.off += seal.LineSize
		s.fill = 0
	}
	return n, nil
}
