package mirror

import (
	"bytes"
	"testing"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// FuzzDecodeRecord feeds arbitrary bytes to the journal record decoder. It
// may refuse them but must never panic, and a record it accepts must
// re-encode to the bytes it was decoded from.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []record{
		{counter: 1, kind: recordMark, seen: 2},
		{counter: 7, kind: recordBatch, seen: 2, epoch: 2, seq: 9, chain: wire.Chain{1, 2}, payload: batchPayload(wire.Chain{3})},
		{counter: 8, kind: recordInstall, seen: 3, epoch: 3, seq: 1},
	} {
		b := make([]byte, recordHeader)
		r.encodeHeader(b)
		f.Add(append(b, r.payload...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		h := make([]byte, recordHeader)
		r.encodeHeader(h)
		if got := append(h, r.payload...); !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("record %d re-encodes differently", r.counter)
		}
	})
}
