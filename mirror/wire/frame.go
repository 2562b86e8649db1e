// Package wire is the replication protocol between a primary and its
// replicas: framed, versioned messages, each frame checksummed with xxhash.
//
// A frame is a 48-byte header followed by a payload. All integers are
// little-endian.
//
//	[0, 4)    magic "PMRP"
//	[4]       protocol version
//	[5]       message type
//	[6, 8)    reserved, zero
//	[8, 12)   payload length
//	[12, 16)  reserved, zero
//	[16, 24)  epoch of the primary incarnation the frame belongs to
//	[24, 32)  sequence number (what it numbers depends on the type)
//	[32, 40)  xxhash64 of the payload
//	[40, 48)  xxhash64 of bytes [0, 40)
//
// The header has its own checksum so that a corrupt length is caught before
// the payload is read: a reader never waits for, or allocates, bytes that a
// flipped bit asked for.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// Version is the protocol version this package speaks. Version 3 chains
// batches (Batch.Prev, Ack and Ready carry chain values), adds Ping and the
// scrub request, and bounds each message type's payload.
const Version = 3

// Magic starts every frame.
const Magic = "PMRP"

// HeaderSize is the size of a frame header.
const HeaderSize = 48

// MaxPayload bounds a frame's payload. A batch carries one commit's
// write-backs (or several commits' in async mode), and must fit.
const MaxPayload = 1 << 30

// MaxSnapChunk bounds the pool bytes of one snapshot chunk.
const MaxSnapChunk = 4 << 20

var (
	// ErrCorrupt is returned for a frame that fails its checksums or whose
	// fields are inconsistent.
	ErrCorrupt = errors.New("pmemgo/mirror: corrupt frame")

	// ErrTruncated is returned when the stream or buffer ends inside a
	// frame.
	ErrTruncated = errors.New("pmemgo/mirror: truncated frame")

	// ErrVersion is returned for a frame of another protocol version.
	ErrVersion = errors.New("pmemgo/mirror: unsupported protocol version")

	// ErrTooLarge is returned for a frame whose payload exceeds the limit
	// of its type, or that the reader's memory budget cannot hold.
	ErrTooLarge = errors.New("pmemgo/mirror: frame exceeds a limit")
)

// Type is a message type.
type Type uint8

// Message types. The comments say what the frame's epoch and sequence
// number carry, and the payload.
const (
	// TypeHello opens a session, primary to replica: the primary's epoch
	// and newest sequence number; payload Hello.
	TypeHello Type = iota + 1
	// TypeReady answers a hello: the epoch and sequence number of the
	// state the replica holds; payload Ready.
	TypeReady
	// TypeBatch carries write-backs: the batch's sequence number; payload
	// Batch.
	TypeBatch
	// TypeAck says every batch up to the sequence number is durable on the
	// replica; no payload.
	TypeAck
	// TypeError reports why the sender closes the connection; payload
	// Error.
	TypeError
	// TypeSnapBegin starts a full copy of the pool, taken from the state
	// after batch seq; payload SnapBegin.
	TypeSnapBegin
	// TypeSnapChunk carries part of the copy; payload SnapChunk.
	TypeSnapChunk
	// TypeSnapEnd ends the copy; payload SnapEnd.
	TypeSnapEnd
	// TypeStatusRequest asks a replica server for its status; no payload.
	TypeStatusRequest
	// TypeStatus answers it; the payload is JSON.
	TypeStatus
	// TypePing keeps an idle session alive, primary to replica: the
	// session's epoch; no payload.
	TypePing
	// TypeScrubRequest asks a replica server to verify the pools it
	// holds; no payload.
	TypeScrubRequest
	// TypeScrubResult answers it; the payload is JSON.
	TypeScrubResult
	maxType = TypeScrubResult
)

var typeNames = [...]string{
	TypeHello: "hello", TypeReady: "ready", TypeBatch: "batch", TypeAck: "ack",
	TypeError: "error", TypeSnapBegin: "snapshot-begin", TypeSnapChunk: "snapshot-chunk",
	TypeSnapEnd: "snapshot-end", TypeStatusRequest: "status-request", TypeStatus: "status",
	TypePing: "ping", TypeScrubRequest: "scrub-request", TypeScrubResult: "scrub-result",
}

// MaxPayloadOf returns the largest payload a frame of type t may carry: a
// reader refuses a larger one from its header, before reading or
// allocating anything for it.
func MaxPayloadOf(t Type) int {
	switch t {
	case TypeHello:
		return helloBaseSize
	case TypeReady:
		// The chunk hashes of a pool of 1 TiB.
		return readyFixed + 16*(1<<40/HashChunk)
	case TypeAck:
		return ChainSize
	case TypeError:
		return 64 << 10
	case TypeSnapBegin:
		return snapBeginSize
	case TypeSnapChunk:
		return 8 + MaxSnapChunk
	case TypeSnapEnd:
		return 8
	case TypeStatusRequest, TypePing, TypeScrubRequest:
		return 0
	case TypeStatus, TypeScrubResult:
		return 64 << 20
	}
	return MaxPayload
}

// String returns the type's name.
func (t Type) String() string {
	if t >= 1 && t <= maxType {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Frame is a decoded frame.
type Frame struct {
	Type  Type
	Epoch uint64
	Seq   uint64
	// Payload aliases the buffer the frame was decoded from.
	Payload []byte
	// PayloadSum is the payload's xxhash64, verified: a receiver that
	// stores the payload can keep it rather than hash the bytes again.
	PayloadSum uint64
}

const (
	fMagic      = 0
	fVersion    = 4
	fType       = 5
	fReserved16 = 6
	fLength     = 8
	fReserved32 = 12
	fEpoch      = 16
	fSeq        = 24
	fPayloadSum = 32
	fHeaderSum  = 40
)

var le = binary.LittleEndian

// BeginFrame appends the header of a frame to dst. The caller appends the
// payload and then calls FinishFrame on the frame, which starts at
// len(dst).
func BeginFrame(dst []byte, t Type, epoch, seq uint64) []byte {
	var h [HeaderSize]byte
	copy(h[fMagic:], Magic)
	h[fVersion] = Version
	h[fType] = byte(t)
	le.PutUint64(h[fEpoch:], epoch)
	le.PutUint64(h[fSeq:], seq)
	return append(dst, h[:]...)
}

// FinishFrame fills in the length and checksums of frame, a header made by
// BeginFrame followed by the whole payload. It panics if frame is shorter
// than a header or its payload longer than MaxPayload: those are
// programming errors.
func FinishFrame(frame []byte) {
	payload := frame[HeaderSize:]
	if len(payload) > MaxPayload {
		panic(fmt.Sprintf("wire: payload of %d bytes exceeds %d", len(payload), MaxPayload))
	}
	le.PutUint32(frame[fLength:], uint32(len(payload)))
	le.PutUint64(frame[fPayloadSum:], xxhash.Sum64(payload))
	le.PutUint64(frame[fHeaderSum:], xxhash.Sum64(frame[:fHeaderSum]))
}

// FrameSum returns the payload's xxhash64 recorded in the header of a frame
// that FinishFrame completed.
func FrameSum(frame []byte) uint64 { return le.Uint64(frame[fPayloadSum:]) }

// AppendFrame appends a whole frame to dst.
func AppendFrame(dst []byte, t Type, epoch, seq uint64, payload []byte) []byte {
	start := len(dst)
	dst = BeginFrame(dst, t, epoch, seq)
	dst = append(dst, payload...)
	FinishFrame(dst[start:])
	return dst
}

// header is a validated frame header.
type header struct {
	t            Type
	length       int
	epoch, seq   uint64
	payloadSum64 uint64
}

// parseHeader validates a frame header.
func parseHeader(h []byte) (header, error) {
	if string(h[fMagic:fMagic+4]) != Magic {
		return header{}, fmt.Errorf("frame magic %q: %w", h[fMagic:fMagic+4], ErrCorrupt)
	}
	if sum, want := le.Uint64(h[fHeaderSum:]), xxhash.Sum64(h[:fHeaderSum]); sum != want {
		return header{}, fmt.Errorf("frame header checksum %#x, computed %#x: %w", sum, want, ErrCorrupt)
	}
	if v := h[fVersion]; v != Version {
		return header{}, fmt.Errorf("frame of protocol version %d, this build speaks %d: %w", v, Version, ErrVersion)
	}
	t := Type(h[fType])
	if t < 1 || t > maxType {
		return header{}, fmt.Errorf("frame type %d: %w", h[fType], ErrCorrupt)
	}
	if le.Uint16(h[fReserved16:]) != 0 || le.Uint32(h[fReserved32:]) != 0 {
		return header{}, fmt.Errorf("%s frame: reserved header bytes are not zero: %w", t, ErrCorrupt)
	}
	n := le.Uint32(h[fLength:])
	if n > MaxPayload {
		return header{}, fmt.Errorf("%s frame: payload of %d bytes exceeds %d: %w", t, n, MaxPayload, ErrCorrupt)
	}
	if limit := MaxPayloadOf(t); int(n) > limit {
		return header{}, fmt.Errorf("%s frame: payload of %d bytes exceeds the %d bytes of its type: %w", t, n, limit, ErrTooLarge)
	}
	return header{
		t: t, length: int(n), epoch: le.Uint64(h[fEpoch:]), seq: le.Uint64(h[fSeq:]),
		payloadSum64: le.Uint64(h[fPayloadSum:]),
	}, nil
}

// finish checks the payload against the header and returns the frame.
func (h header) finish(payload []byte) (Frame, error) {
	if sum := xxhash.Sum64(payload); sum != h.payloadSum64 {
		return Frame{}, fmt.Errorf("%s frame seq %d: payload checksum %#x, computed %#x: %w", h.t, h.seq, h.payloadSum64, sum, ErrCorrupt)
	}
	return Frame{Type: h.t, Epoch: h.epoch, Seq: h.seq, Payload: payload, PayloadSum: h.payloadSum64}, nil
}

// Decode decodes the frame at the start of b and returns it with the
// number of bytes it takes. Its payload aliases b.
func Decode(b []byte) (Frame, int, error) {
	if len(b) < HeaderSize {
		return Frame{}, 0, fmt.Errorf("%d bytes, a frame header needs %d: %w", len(b), HeaderSize, ErrTruncated)
	}
	h, err := parseHeader(b[:HeaderSize])
	if err != nil {
		return Frame{}, 0, err
	}
	end := HeaderSize + h.length
	if len(b) < end {
		return Frame{}, 0, fmt.Errorf("%s frame: %d payload bytes of %d: %w", h.t, len(b)-HeaderSize, h.length, ErrTruncated)
	}
	f, err := h.finish(b[HeaderSize:end])
	return f, end, err
}

// Budget bounds the memory that readers hold for payloads, across
// connections. Acquire reserves n bytes or fails at once; Release gives
// back what was acquired.
type Budget interface {
	Acquire(n int) error
	Release(n int)
}

// Reader reads frames from a stream.
type Reader struct {
	r   *bufio.Reader
	hdr [HeaderSize]byte
	buf []byte
	// budget, if set, is charged with cap(buf).
	budget Budget
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10)}
}

// NewBudgetReader returns a Reader reading from r whose payload buffer is
// charged to b. Close gives the charge back.
func NewBudgetReader(r io.Reader, b Budget) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), budget: b}
}

// keepBuf is the largest payload buffer a Reader keeps between frames: a
// huge buffer kept for one unusually large batch would be held for the
// life of the connection, so buffers are kept up to the size of the
// batches a busy primary sends (a mirror captures at most 64 MiB).
const keepBuf = 64 << 20

// Next reads the next frame. Its payload is valid until the next call. At
// the end of the stream between frames it returns io.EOF; inside a frame,
// an error wrapping ErrTruncated.
func (r *Reader) Next() (Frame, error) {
	if cap(r.buf) > keepBuf {
		r.setBuf(nil)
	}
	if n, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("stream ended %d bytes into a frame header: %w", n, ErrTruncated)
		}
		return Frame{}, err
	}
	h, err := parseHeader(r.hdr[:])
	if err != nil {
		return Frame{}, err
	}
	payload, err := r.payload(h)
	if err != nil {
		return Frame{}, err
	}
	return h.finish(payload)
}

// payload reads the payload of the frame whose header is h. The buffer
// grows only as bytes arrive, so that a header announcing a large payload
// costs nothing until the payload is actually sent.
func (r *Reader) payload(h header) ([]byte, error) {
	buf := r.buf[:0]
	for len(buf) < h.length {
		if len(buf) == cap(buf) {
			grown := min(h.length, max(2*cap(buf), 64<<10))
			if r.budget != nil {
				if err := r.budget.Acquire(grown - cap(buf)); err != nil {
					return nil, fmt.Errorf("%s frame seq %d of %d bytes: %w: %w", h.t, h.seq, h.length, err, ErrTooLarge)
				}
			}
			nb := make([]byte, len(buf), grown)
			copy(nb, buf)
			r.buf, buf = nb, nb
		}
		n, err := io.ReadFull(r.r, buf[len(buf):cap(buf)][:min(cap(buf), h.length)-len(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%s frame seq %d: stream ended after %d of %d payload bytes: %w", h.t, h.seq, len(buf), h.length, ErrTruncated)
			}
			return nil, err
		}
	}
	return buf, nil
}

// setBuf replaces the payload buffer, moving the budget's charge.
func (r *Reader) setBuf(b []byte) {
	if r.budget != nil {
		r.budget.Release(cap(r.buf))
	}
	r.buf = b
}

// Close gives back the payload buffer and its charge to the budget; the
// last frame's payload is no longer valid.
func (r *Reader) Close() { r.setBuf(nil) }
