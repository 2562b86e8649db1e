package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math"

	"github.com/cespare/xxhash/v2"
)

// ChainSize is the size of a Chain.
const ChainSize = sha256.Size

// Chain is the running hash of a primary incarnation's batches: the chain
// value after batch seq is NextChain of that batch's epoch, sequence number
// and payload checksum, and the payload starts with the chain value after
// the batch before (Batch.Prev). Two replicas with the same chain value at
// the same epoch and sequence number hold the same history, as Raft's log
// matching property has it; the zero Chain is the value before the first
// batch. The payload enters through its xxhash64, which both sides compute
// for the frame anyway: SHA-256 over whole batches would cost more than
// the network on the async path, and the chain is there to tell histories
// apart and to be unknown to a peer that did not see the previous one, not
// to resist collisions crafted by one that did.
type Chain [ChainSize]byte

// NextChain returns the chain value after the batch of the given epoch and
// sequence number whose payload's xxhash64 is sum.
func NextChain(epoch, seq, sum uint64) Chain {
	var c Chainer
	return c.Next(epoch, seq, sum)
}

// Chainer computes chain values without allocating, for one goroutine at a
// time. The zero value is ready to use.
type Chainer struct {
	d   hash.Hash
	buf [ChainSize]byte
}

// Next returns the chain value after the batch of the given epoch and
// sequence number whose payload's xxhash64 is sum.
func (c *Chainer) Next(epoch, seq, sum uint64) Chain {
	if c.d == nil {
		c.d = sha256.New()
	}
	c.d.Reset()
	le.PutUint64(c.buf[:], epoch)
	le.PutUint64(c.buf[8:], seq)
	le.PutUint64(c.buf[16:], sum)
	c.d.Write(c.buf[:24])
	return Chain(c.d.Sum(c.buf[:0]))
}

// String returns the first 8 bytes of c in hex, enough to tell values
// apart in a message.
func (c Chain) String() string { return hex.EncodeToString(c[:8]) }

// Tag returns what a replica shows of its chain value in answer to hello:
// a primary that holds the value can compare tags, but the tag does not
// tell a peer the value it would need to extend the replica's history.
func (c Chain) Tag() Chain {
	return sha256.Sum256(append([]byte("pmemgo/mirror ready tag\x00"), c[:]...))
}

// Hello is the payload of TypeHello: which pool the primary replicates.
type Hello struct {
	UUID [16]byte
	Size uint64
}

const helloSize = 24

// AppendHello appends the payload of h to dst.
func AppendHello(dst []byte, h Hello) []byte {
	dst = append(dst, h.UUID[:]...)
	return le.AppendUint64(dst, h.Size)
}

// DecodeHello decodes a TypeHello payload.
func DecodeHello(p []byte) (Hello, error) {
	var h Hello
	if len(p) != helloSize {
		return h, fmt.Errorf("hello payload of %d bytes, want %d: %w", len(p), helloSize, ErrCorrupt)
	}
	copy(h.UUID[:], p)
	h.Size = le.Uint64(p[16:])
	return h, nil
}

// HashChunk is the span of pool bytes each ChunkHash of Ready covers.
const HashChunk = 256 << 10

// ChunkHash identifies the content of one HashChunk of a pool: two
// xxhash64 digests with different seeds, so that two chunks taken for
// equal differ in 128 bits of hash.
type ChunkHash [2]uint64

// HashChunkOf returns the ChunkHash of b.
func HashChunkOf(b []byte) ChunkHash {
	var d xxhash.Digest
	d.ResetWithSeed(0)
	d.Write(b)
	a := d.Sum64()
	d.ResetWithSeed(0x9e3779b97f4a7c15)
	d.Write(b)
	return ChunkHash{a, d.Sum64()}
}

// Ready is the payload of TypeReady.
type Ready struct {
	// SeenEpoch is the newest epoch the replica has seen for the pool.
	SeenEpoch uint64
	// ChainTag is the Tag of the chain value after the batch the replica
	// holds (the frame's epoch and sequence number).
	ChainTag Chain
	// Hashes, when the replica holds a copy of the pool, identify the
	// content of each HashChunk of that copy, so that a snapshot need
	// only carry the chunks that differ (SnapBegin.Delta). Empty when
	// the replica holds no copy.
	Hashes []ChunkHash
}

// AppendReady appends the payload of r to dst.
func AppendReady(dst []byte, r Ready) []byte {
	dst = le.AppendUint64(dst, r.SeenEpoch)
	dst = append(dst, r.ChainTag[:]...)
	dst = le.AppendUint64(dst, uint64(len(r.Hashes)))
	for _, h := range r.Hashes {
		dst = le.AppendUint64(le.AppendUint64(dst, h[0]), h[1])
	}
	return dst
}

// DecodeReady decodes a TypeReady payload.
func DecodeReady(p []byte) (Ready, error) {
	if len(p) < readyFixed {
		return Ready{}, fmt.Errorf("ready payload of %d bytes, want at least %d: %w", len(p), readyFixed, ErrCorrupt)
	}
	r := Ready{SeenEpoch: le.Uint64(p)}
	copy(r.ChainTag[:], p[8:])
	n := le.Uint64(p[8+ChainSize:])
	hs := p[readyFixed:]
	if n > uint64(len(hs))/16 || uint64(len(hs)) != 16*n {
		return Ready{}, fmt.Errorf("ready payload of %d bytes for %d chunk hashes: %w", len(p), n, ErrCorrupt)
	}
	if n > 0 {
		r.Hashes = make([]ChunkHash, n)
		for i := range r.Hashes {
			r.Hashes[i] = ChunkHash{le.Uint64(hs[16*i:]), le.Uint64(hs[8+16*i:])}
		}
	}
	return r, nil
}

const readyFixed = 16 + ChainSize

// AppendAck appends the payload of an acknowledgement to dst: the chain
// value after the batch acknowledged, so that the primary knows the
// replica holds exactly that batch.
func AppendAck(dst []byte, c Chain) []byte { return append(dst, c[:]...) }

// DecodeAck decodes a TypeAck payload.
func DecodeAck(p []byte) (Chain, error) {
	var c Chain
	if len(p) != ChainSize {
		return c, fmt.Errorf("ack payload of %d bytes, want %d: %w", len(p), ChainSize, ErrCorrupt)
	}
	copy(c[:], p)
	return c, nil
}

// Error codes of TypeError.
const (
	// CodeProtocol: a message out of place or with bad content.
	CodeProtocol uint16 = iota + 1
	// CodeCorrupt: a frame failed its checksum or was truncated.
	CodeCorrupt
	// CodeStaleEpoch: the primary's epoch is older than one the replica
	// has seen.
	CodeStaleEpoch
	// CodeBusy: another primary is replicating the pool right now.
	CodeBusy
	// CodeIO: the replica could not store what it was sent.
	CodeIO
	// CodeWrongPool: the pool's size does not match the replica's copy.
	CodeWrongPool
	// CodeLimit: a message or a session exceeds a limit of the server:
	// frame size, memory, connections, pools, pool size, epoch jump.
	CodeLimit
	// CodeDiverged: the replica's history is not the primary's: same
	// epoch and sequence number, another chain value.
	CodeDiverged
	// CodeUnavailable: the server set the pool aside (it failed to open
	// or its fencing state is lost) until an operator repairs it.
	CodeUnavailable
	// CodeUnauthorized: the identity of the peer's certificate may not do
	// what it asked.
	CodeUnauthorized
)

// Error is the payload of TypeError.
type Error struct {
	Code    uint16
	Message string
}

// AppendError appends the payload of e to dst.
func AppendError(dst []byte, e Error) []byte {
	dst = le.AppendUint16(dst, e.Code)
	return append(dst, e.Message...)
}

// DecodeError decodes a TypeError payload.
func DecodeError(p []byte) (Error, error) {
	if len(p) < 2 {
		return Error{}, fmt.Errorf("error payload of %d bytes: %w", len(p), ErrCorrupt)
	}
	return Error{Code: le.Uint16(p), Message: string(p[2:])}, nil
}

// Run is a range of pool bytes: Data is to be written at offset Off.
type Run struct {
	Off  uint64
	Data []byte
}

// Batch is the payload of TypeBatch: the lines a replica must write, all or
// none, to move from the state of the previous batch to this one's.
type Batch struct {
	// Prev is the chain value after the previous batch: a replica applies
	// the batch only on top of that one.
	Prev Chain
	// Runs are sorted by offset and do not overlap.
	Runs []Run
}

const runHeader = 12 // offset, length

// batchFixed is the size of a batch payload's header: Prev, run count.
const batchFixed = ChainSize + 4

// BatchSize returns the payload size of a batch of n runs holding bytes
// bytes in all.
func BatchSize(n, bytes int) int { return batchFixed + n*runHeader + bytes }

// AppendBatchHeader appends the start of a batch payload of n runs
// following the batch whose chain value is prev; the runs follow, each
// appended with AppendRun.
func AppendBatchHeader(dst []byte, prev Chain, n int) []byte {
	dst = append(dst, prev[:]...)
	return le.AppendUint32(dst, uint32(n))
}

// AppendRun appends a run of a batch payload.
func AppendRun(dst []byte, off uint64, data []byte) []byte {
	return append(AppendRunHeader(dst, off, len(data)), data...)
}

// AppendRunHeader appends the header of a run of n bytes at off; the
// caller appends its n bytes of data.
func AppendRunHeader(dst []byte, off uint64, n int) []byte {
	dst = le.AppendUint64(dst, off)
	return le.AppendUint32(dst, uint32(n))
}

// DecodeBatch decodes a TypeBatch payload, appending its runs to runs.
// Their data alias p. The runs must be non-empty, sorted and disjoint, and
// the payload must hold nothing else. A batch may have no run: it then
// only moves the replica to the next sequence number.
func DecodeBatch(p []byte, runs []Run) (Batch, error) {
	if len(p) < batchFixed {
		return Batch{}, fmt.Errorf("batch payload of %d bytes: %w", len(p), ErrCorrupt)
	}
	var prev Chain
	copy(prev[:], p)
	n := le.Uint32(p[ChainSize:])
	p = p[batchFixed:]
	if uint64(n) > uint64(len(p))/runHeader {
		return Batch{}, fmt.Errorf("batch of %d runs in %d bytes: %w", n, len(p)+batchFixed, ErrCorrupt)
	}
	var end uint64
	for i := range n {
		if len(p) < runHeader {
			return Batch{}, fmt.Errorf("batch run %d of %d: header cut short: %w", i, n, ErrCorrupt)
		}
		off, size := le.Uint64(p), uint64(le.Uint32(p[8:]))
		p = p[runHeader:]
		switch {
		case size == 0 || size > uint64(len(p)):
			return Batch{}, fmt.Errorf("batch run %d at offset %d: %d bytes, %d left: %w", i, off, size, len(p), ErrCorrupt)
		case off > math.MaxUint64-size:
			return Batch{}, fmt.Errorf("batch run %d: offset %d + %d overflows: %w", i, off, size, ErrCorrupt)
		case i > 0 && off < end:
			return Batch{}, fmt.Errorf("batch run %d at offset %d overlaps or precedes the previous run ending at %d: %w", i, off, end, ErrCorrupt)
		}
		runs = append(runs, Run{Off: off, Data: p[:size:size]})
		p = p[size:]
		end = off + size
	}
	if len(p) != 0 {
		return Batch{}, fmt.Errorf("batch: %d bytes after the last run: %w", len(p), ErrCorrupt)
	}
	return Batch{Prev: prev, Runs: runs}, nil
}

// SnapBegin is the payload of TypeSnapBegin.
type SnapBegin struct {
	UUID [16]byte
	Size uint64
	// Delta is set when the copy starts from the replica's own copy of
	// the pool, as it was when it answered hello with its chunk hashes:
	// only the chunks whose content differs are sent.
	Delta bool
	// Chain is the chain value after the batch the copy is taken after
	// (the frame's sequence number): the batches that follow the copy
	// extend it.
	Chain Chain
}

const snapBeginSize = helloSize + 8 + ChainSize

// AppendSnapBegin appends the payload of s to dst.
func AppendSnapBegin(dst []byte, s SnapBegin) []byte {
	dst = AppendHello(dst, Hello{UUID: s.UUID, Size: s.Size})
	var flags uint64
	if s.Delta {
		flags = 1
	}
	dst = le.AppendUint64(dst, flags)
	return append(dst, s.Chain[:]...)
}

// DecodeSnapBegin decodes a TypeSnapBegin payload.
func DecodeSnapBegin(p []byte) (SnapBegin, error) {
	if len(p) != snapBeginSize {
		return SnapBegin{}, fmt.Errorf("snapshot begin payload of %d bytes, want %d: %w", len(p), snapBeginSize, ErrCorrupt)
	}
	h, err := DecodeHello(p[:helloSize])
	if err != nil {
		return SnapBegin{}, fmt.Errorf("snapshot begin: %w", err)
	}
	flags := le.Uint64(p[helloSize:])
	if flags > 1 {
		return SnapBegin{}, fmt.Errorf("snapshot begin: unknown flags %#x: %w", flags, ErrCorrupt)
	}
	s := SnapBegin{UUID: h.UUID, Size: h.Size, Delta: flags == 1}
	copy(s.Chain[:], p[helloSize+8:])
	return s, nil
}

// SnapChunk is the payload of TypeSnapChunk.
type SnapChunk struct {
	Off  uint64
	Data []byte
}

// AppendSnapChunkHeader appends the start of a chunk payload; its data
// follows.
func AppendSnapChunkHeader(dst []byte, off uint64) []byte { return le.AppendUint64(dst, off) }

// DecodeSnapChunk decodes a TypeSnapChunk payload; Data aliases p.
func DecodeSnapChunk(p []byte) (SnapChunk, error) {
	if len(p) < 8 {
		return SnapChunk{}, fmt.Errorf("snapshot chunk payload of %d bytes: %w", len(p), ErrCorrupt)
	}
	return SnapChunk{Off: le.Uint64(p), Data: p[8:]}, nil
}

// SnapEnd is the payload of TypeSnapEnd.
type SnapEnd struct {
	// ConsistentAt is the first batch after which the copy, with the
	// batches since the snapshot began applied to it, is the state of a
	// commit. The chunks were read while commits went on; every line a
	// commit changed meanwhile is in a batch up to this one.
	ConsistentAt uint64
}

// AppendSnapEnd appends the payload of s to dst.
func AppendSnapEnd(dst []byte, s SnapEnd) []byte { return le.AppendUint64(dst, s.ConsistentAt) }

// DecodeSnapEnd decodes a TypeSnapEnd payload.
func DecodeSnapEnd(p []byte) (SnapEnd, error) {
	if len(p) != 8 {
		return SnapEnd{}, fmt.Errorf("snapshot end payload of %d bytes, want 8: %w", len(p), ErrCorrupt)
	}
	return SnapEnd{ConsistentAt: le.Uint64(p)}, nil
}
