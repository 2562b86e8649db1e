package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// sampleFrames returns one valid frame of every type.
func sampleFrames() [][]byte {
	uuid := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	prev := wire.Chain{0xc0, 0xff, 0xee}
	batch := wire.AppendBatchHeader(nil, prev, 2)
	batch = wire.AppendRun(batch, 4096, bytes.Repeat([]byte{0xaa}, 64))
	batch = wire.AppendRun(batch, 8192, bytes.Repeat([]byte{0xbb}, 128))
	chunk := append(wire.AppendSnapChunkHeader(nil, 1<<20), bytes.Repeat([]byte{7}, 100)...)
	return [][]byte{
		wire.AppendFrame(nil, wire.TypeHello, 3, 10, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: 8 << 20})),
		wire.AppendFrame(nil, wire.TypeHello, 3, 10, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: 8 << 20, BaseEpoch: 2, BaseSeq: 9})),
		wire.AppendFrame(nil, wire.TypeReady, 2, 9, wire.AppendReady(nil, wire.Ready{SeenEpoch: 3, ChainTag: prev.Tag()})),
		wire.AppendFrame(nil, wire.TypeReady, 2, 9, wire.AppendReady(nil, wire.Ready{SeenEpoch: 3, Hashes: []wire.ChunkHash{{1, 2}, {3, 4}}})),
		wire.AppendFrame(nil, wire.TypeBatch, 3, 11, batch),
		wire.AppendFrame(nil, wire.TypeBatch, 3, 12, wire.AppendBatchHeader(nil, wire.NextChain(3, 11, xxhash.Sum64(batch)), 0)),
		wire.AppendFrame(nil, wire.TypeAck, 3, 11, wire.AppendAck(nil, wire.NextChain(3, 11, xxhash.Sum64(batch)))),
		wire.AppendFrame(nil, wire.TypeError, 0, 0, wire.AppendError(nil, wire.Error{Code: wire.CodeStaleEpoch, Message: "stale"})),
		wire.AppendFrame(nil, wire.TypeSnapBegin, 3, 11, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: uuid, Size: 8 << 20})),
		wire.AppendFrame(nil, wire.TypeSnapBegin, 3, 11, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: uuid, Size: 8 << 20, Delta: true, Chain: prev})),
		wire.AppendFrame(nil, wire.TypeSnapBegin, 3, 11, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: uuid, Size: 8 << 20, Delta: true, Listed: true, Chain: prev})),
		wire.AppendFrame(nil, wire.TypeSnapChunk, 3, 11, chunk),
		wire.AppendFrame(nil, wire.TypeSnapEnd, 3, 11, wire.AppendSnapEnd(nil, wire.SnapEnd{ConsistentAt: 12})),
		wire.AppendFrame(nil, wire.TypeStatusRequest, 0, 0, nil),
		wire.AppendFrame(nil, wire.TypeStatus, 0, 0, []byte(`[]`)),
		wire.AppendFrame(nil, wire.TypePing, 3, 0, nil),
		wire.AppendFrame(nil, wire.TypeScrubRequest, 0, 0, nil),
		wire.AppendFrame(nil, wire.TypeScrubResult, 0, 0, []byte(`[]`)),
	}
}

// decodePayload decodes a frame's payload according to its type.
func decodePayload(f wire.Frame) error {
	var err error
	switch f.Type {
	case wire.TypeHello:
		_, err = wire.DecodeHello(f.Payload)
	case wire.TypeReady:
		_, err = wire.DecodeReady(f.Payload)
	case wire.TypeBatch:
		_, err = wire.DecodeBatch(f.Payload, nil)
	case wire.TypeError:
		_, err = wire.DecodeError(f.Payload)
	case wire.TypeSnapBegin:
		_, err = wire.DecodeSnapBegin(f.Payload)
	case wire.TypeSnapChunk:
		_, err = wire.DecodeSnapChunk(f.Payload)
	case wire.TypeSnapEnd:
		_, err = wire.DecodeSnapEnd(f.Payload)
	case wire.TypeAck:
		_, err = wire.DecodeAck(f.Payload)
	}
	return err
}

func TestRoundTrip(t *testing.T) {
	for _, b := range sampleFrames() {
		f, n, err := wire.Decode(b)
		require.NoError(t, err)
		assert.Equal(t, len(b), n)
		require.NoError(t, decodePayload(f), f.Type.String())
		assert.Equal(t, b, wire.AppendFrame(nil, f.Type, f.Epoch, f.Seq, f.Payload), f.Type.String())
	}
}

func TestBatchRuns(t *testing.T) {
	prev := wire.Chain{1, 2, 3}
	p := wire.AppendBatchHeader(nil, prev, 2)
	p = wire.AppendRun(p, 64, []byte("abc"))
	p = wire.AppendRun(p, 128, []byte("de"))
	b, err := wire.DecodeBatch(p, nil)
	require.NoError(t, err)
	assert.Equal(t, []wire.Run{{Off: 64, Data: []byte("abc")}, {Off: 128, Data: []byte("de")}}, b.Runs)
	assert.Equal(t, prev, b.Prev)
	assert.Equal(t, wire.BatchSize(2, 5), len(p))

	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"overlapping runs", wire.AppendRun(wire.AppendRun(wire.AppendBatchHeader(nil, prev, 2), 64, []byte("abcd")), 66, []byte("x"))},
		{"unsorted runs", wire.AppendRun(wire.AppendRun(wire.AppendBatchHeader(nil, prev, 2), 64, []byte("a")), 0, []byte("x"))},
		{"empty run", wire.AppendRun(wire.AppendBatchHeader(nil, prev, 1), 64, nil)},
		{"trailing bytes", append(wire.AppendRun(wire.AppendBatchHeader(nil, prev, 1), 64, []byte("a")), 0)},
		{"too many runs", wire.AppendRun(wire.AppendBatchHeader(nil, prev, 3), 64, []byte("a"))},
		{"short", []byte{1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wire.DecodeBatch(tc.p, nil)
			assert.ErrorIs(t, err, wire.ErrCorrupt)
		})
	}
}

// TestCorruptFrame flips every bit of a frame in turn: each flip must be
// caught, by a checksum or a field check.
func TestCorruptFrame(t *testing.T) {
	b := sampleFrames()[2]
	for i := range len(b) * 8 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		_, _, err := wire.Decode(c)
		if err == nil {
			t.Fatalf("flipping bit %d of byte %d went unnoticed", i%8, i/8)
		}
		if !errors.Is(err, wire.ErrCorrupt) && !errors.Is(err, wire.ErrVersion) && !errors.Is(err, wire.ErrTruncated) {
			t.Fatalf("byte %d: error %v wraps no sentinel", i/8, err)
		}
	}
}

func TestTruncatedFrame(t *testing.T) {
	b := sampleFrames()[2]
	for n := range len(b) {
		_, _, err := wire.Decode(b[:n])
		require.ErrorIs(t, err, wire.ErrTruncated, "prefix of %d bytes", n)
		_, err = wire.NewReader(bytes.NewReader(b[:n])).Next()
		if n == 0 {
			assert.Equal(t, io.EOF, err)
		} else {
			assert.ErrorIs(t, err, wire.ErrTruncated, "stream of %d bytes", n)
		}
	}
}

func TestReaderStream(t *testing.T) {
	frames := sampleFrames()
	var stream []byte
	for _, b := range frames {
		stream = append(stream, b...)
	}
	r := wire.NewReader(bytes.NewReader(stream))
	for _, b := range frames {
		f, err := r.Next()
		require.NoError(t, err)
		want, _, err := wire.Decode(b)
		require.NoError(t, err)
		assert.Equal(t, want, f)
	}
	_, err := r.Next()
	assert.Equal(t, io.EOF, err)
}

func TestVersion(t *testing.T) {
	b := sampleFrames()[0]
	b[4] = wire.Version + 1
	// Reseal the header, as a peer speaking that version would have.
	binary.LittleEndian.PutUint64(b[40:], xxhash.Sum64(b[:40]))
	_, _, err := wire.Decode(b)
	assert.ErrorIs(t, err, wire.ErrVersion)
}

func TestReadyHashesAndDeltaRoundTrip(t *testing.T) {
	chunk := make([]byte, wire.HashChunk)
	a := wire.HashChunkOf(chunk)
	chunk[100] = 1
	b := wire.HashChunkOf(chunk)
	require.NotEqual(t, a, b)
	require.NotEqual(t, a[0], a[1], "the two digests use different seeds")
	r := wire.Ready{SeenEpoch: 5, ChainTag: wire.Chain{4}.Tag(), Hashes: []wire.ChunkHash{a, b}}
	got, err := wire.DecodeReady(wire.AppendReady(nil, r))
	require.NoError(t, err)
	require.Equal(t, r, got)
	p := wire.AppendReady(nil, r)
	_, err = wire.DecodeReady(p[:len(p)-1])
	require.ErrorIs(t, err, wire.ErrCorrupt)

	sb := wire.SnapBegin{Size: 8 << 20, Delta: true, Chain: wire.Chain{5}}
	gotSB, err := wire.DecodeSnapBegin(wire.AppendSnapBegin(nil, sb))
	require.NoError(t, err)
	require.Equal(t, sb, gotSB)
	bad := wire.AppendSnapBegin(nil, sb)
	bad[len(bad)-wire.ChainSize-1] = 0x80
	_, err = wire.DecodeSnapBegin(bad)
	require.ErrorIs(t, err, wire.ErrCorrupt)

	sb.Listed = true
	gotSB, err = wire.DecodeSnapBegin(wire.AppendSnapBegin(nil, sb))
	require.NoError(t, err)
	require.Equal(t, sb, gotSB)
	sb.Delta = false
	_, err = wire.DecodeSnapBegin(wire.AppendSnapBegin(nil, sb))
	require.ErrorIs(t, err, wire.ErrCorrupt, "a listed snapshot is a delta")
}

// TestHelloBase checks that a hello carries a base only when it has one,
// and that a base of epoch 0 is refused.
func TestHelloBase(t *testing.T) {
	for _, h := range []wire.Hello{
		{UUID: [16]byte{1}, Size: 8 << 20},
		{UUID: [16]byte{1}, Size: 8 << 20, BaseEpoch: 7, BaseSeq: 42},
	} {
		p := wire.AppendHello(nil, h)
		got, err := wire.DecodeHello(p)
		require.NoError(t, err)
		assert.Equal(t, h, got)
		assert.LessOrEqual(t, len(p), wire.MaxPayloadOf(wire.TypeHello))
	}
	p := wire.AppendHello(nil, wire.Hello{BaseEpoch: 7})
	binary.LittleEndian.PutUint64(p[24:], 0)
	_, err := wire.DecodeHello(p)
	assert.ErrorIs(t, err, wire.ErrCorrupt)
	_, err = wire.DecodeHello(p[:30])
	assert.ErrorIs(t, err, wire.ErrCorrupt)
}

// TestTypeLimits sends, for each message type, a header announcing a
// payload one byte over the type's limit: the reader refuses it from the
// header, before reading or allocating the payload.
func TestTypeLimits(t *testing.T) {
	for typ := wire.TypeHello; typ <= wire.TypeScrubResult; typ++ {
		t.Run(typ.String(), func(t *testing.T) {
			limit := wire.MaxPayloadOf(typ)
			if limit >= wire.MaxPayload {
				return
			}
			_, err := wire.NewReader(bytes.NewReader(announce(typ, limit+1))).Next()
			assert.ErrorIs(t, err, wire.ErrTooLarge)
		})
	}
}

// announce returns the header of a frame announcing n payload bytes.
func announce(t wire.Type, n int) []byte {
	h := wire.BeginFrame(nil, t, 1, 1)
	binary.LittleEndian.PutUint32(h[8:], uint32(n))
	binary.LittleEndian.PutUint64(h[40:], xxhash.Sum64(h[:40]))
	return h
}

// testBudget is a wire.Budget of limit bytes.
type testBudget struct{ limit, used int }

func (b *testBudget) Acquire(n int) error {
	if b.used+n > b.limit {
		return errors.New("over budget")
	}
	b.used += n
	return nil
}

func (b *testBudget) Release(n int) { b.used -= n }

// TestReaderAllocatesAsBytesArrive announces a batch of 1 GiB and sends
// 100 KiB of it: the reader allocates for what arrived, not for what the
// header announced, and charges its budget as much. A budget too small for
// a frame ends it with ErrTooLarge; Close gives everything back.
func TestReaderAllocatesAsBytesArrive(t *testing.T) {
	stream := append(announce(wire.TypeBatch, wire.MaxPayload), make([]byte, 100<<10)...)
	b := &testBudget{limit: 1 << 30}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := wire.NewBudgetReader(bytes.NewReader(stream), b)
	_, err := r.Next()
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, wire.ErrTruncated)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "bytes allocated for a frame announcing 1 GiB, of which 100 KiB came")
	assert.LessOrEqual(t, b.used, 256<<10)
	r.Close()
	assert.Zero(t, b.used)

	small := &testBudget{limit: 64 << 10}
	r = wire.NewBudgetReader(bytes.NewReader(stream), small)
	_, err = r.Next()
	assert.ErrorIs(t, err, wire.ErrTooLarge)
	r.Close()
	assert.Zero(t, small.used)
}
