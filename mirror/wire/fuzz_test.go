package wire_test

import (
	"bytes"
	"testing"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// FuzzReader feeds arbitrary streams to the frame reader. It may refuse
// them but must never panic, and a frame it accepts must re-encode to the
// bytes it was read from.
func FuzzReader(f *testing.F) {
	var all []byte
	for _, b := range sampleFrames() {
		f.Add(b)
		all = append(all, b...)
	}
	f.Add(all)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := wire.NewReader(bytes.NewReader(data))
		off := 0
		for {
			fr, err := r.Next()
			if err != nil {
				return
			}
			_ = decodePayload(fr)
			enc := wire.AppendFrame(nil, fr.Type, fr.Epoch, fr.Seq, fr.Payload)
			if !bytes.Equal(enc, data[off:off+len(enc)]) {
				t.Fatalf("frame at %d re-encodes differently", off)
			}
			off += len(enc)
		}
	})
}

// FuzzPayload seals arbitrary payloads in valid frames, so that the
// fuzzer gets past the checksums to the payload decoders. A decoded batch
// must re-encode to its payload.
func FuzzPayload(f *testing.F) {
	for _, b := range sampleFrames() {
		fr, _, err := wire.Decode(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(fr.Type), bytes.Clone(fr.Payload))
	}
	f.Fuzz(func(t *testing.T, typ byte, payload []byte) {
		b := wire.AppendFrame(nil, wire.Type(typ), 1, 2, payload)
		fr, _, err := wire.Decode(b)
		if err != nil {
			return
		}
		if err := decodePayload(fr); err != nil || fr.Type != wire.TypeBatch {
			return
		}
		batch, _ := wire.DecodeBatch(fr.Payload, nil)
		enc := wire.AppendBatchHeader(nil, batch.Prev, len(batch.Runs))
		for _, r := range batch.Runs {
			enc = wire.AppendRun(enc, r.Off, r.Data)
		}
		if !bytes.Equal(enc, payload) {
			t.Fatalf("batch of %d runs re-encodes differently", len(batch.Runs))
		}
	})
}
