package remote

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// The memory node protocol frames messages as the mirror's does: a 48-byte
// header with its own checksum, so that a corrupt length is caught before
// the payload is read, followed by the payload and its checksum.
//
//	[0, 4)    magic "PMRN"
//	[4]       protocol version
//	[5]       message type
//	[6, 8)    reserved, zero
//	[8, 12)   payload length
//	[12, 16)  reserved, zero
//	[16, 24)  epoch of the node incarnation the request is meant for
//	[24, 32)  request id; a reply carries the id of its request
//	[32, 40)  xxhash64 of the payload
//	[40, 48)  xxhash64 of bytes [0, 40)

// Version is the protocol version this package speaks.
const Version = 1

const (
	frameMagic  = "PMRN"
	headerSize  = 48
	fVersion    = 4
	fType       = 5
	fReserved16 = 6
	fLength     = 8
	fReserved32 = 12
	fEpoch      = 16
	fID         = 24
	fPayloadSum = 32
	fHeaderSum  = 40
)

// Limits every peer's sizes and counts are checked against before use.
const (
	// MaxRead bounds the bytes of one read request.
	MaxRead = 1 << 20
	// MaxWrite bounds the payload of one write-back batch.
	MaxWrite = 64 << 20
	// MaxRuns bounds the runs of one write-back batch.
	MaxRuns = 1 << 20
	// MaxName bounds a region name.
	MaxName = 128
	// MaxRegion bounds a region's size.
	MaxRegion = 1 << 40
)

var (
	// ErrProtocol is returned for a frame that fails its checksums, is of
	// an unknown type or version, or whose fields are out of bounds.
	ErrProtocol = errors.New("pmemgo/remote: protocol error")
)

// msgType is a message type.
type msgType uint8

// Message types; requests go from client to node, and each is answered by
// tData, tRegion, tAck, tStatusReply or tError with the request's id.
const (
	tResolve     msgType = iota + 1 // name, optional write claim -> tRegion
	tCreate                         // name and size -> tRegion
	tRead                           // region, offset, length, priority -> tData
	tWrite                          // region, runs of bytes -> tAck once durable
	tRelease                        // region: drop the write claim -> tAck
	tStatus                         // -> tStatusReply
	tRegion                         // region id, size, last writer
	tData                           // bytes read
	tAck                            // no payload
	tStatusReply                    // JSON
	tError                          // code and message
	tScrub                          // -> tStatusReply: the problems found, JSON
	maxType      = tScrub
)

var typeNames = [...]string{
	tResolve: "resolve", tCreate: "create", tRead: "read", tWrite: "write", tRelease: "release",
	tStatus: "status", tRegion: "region", tData: "data", tAck: "ack", tStatusReply: "status-reply",
	tError: "error", tScrub: "scrub",
}

func (t msgType) String() string {
	if t >= 1 && t <= maxType {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// maxPayload is the largest payload a frame of type t may carry.
func maxPayload(t msgType) int {
	switch t {
	case tResolve:
		return 1 + 16 + MaxName
	case tCreate:
		return 8 + MaxName
	case tRead:
		return readSize
	case tWrite:
		return MaxWrite
	case tRelease:
		return 4
	case tStatus, tAck, tScrub:
		return 0
	case tRegion:
		return regionSize
	case tData:
		return MaxRead
	case tStatusReply:
		return 4 << 20
	case tError:
		return 4 << 10
	}
	return 0
}

// frame is a decoded frame. Its payload aliases the reader's buffer.
type frame struct {
	t       msgType
	epoch   uint64
	id      uint64
	payload []byte
}

var le = binary.LittleEndian

// appendFrame appends a whole frame to dst.
func appendFrame(dst []byte, t msgType, epoch, id uint64, payload []byte) []byte {
	h := frameHeader(t, epoch, id, payload)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// frameHeader returns the header of a frame carrying payload.
func frameHeader(t msgType, epoch, id uint64, payload []byte) [headerSize]byte {
	var h [headerSize]byte
	copy(h[:], frameMagic)
	h[fVersion] = Version
	h[fType] = byte(t)
	le.PutUint32(h[fLength:], uint32(len(payload)))
	le.PutUint64(h[fEpoch:], epoch)
	le.PutUint64(h[fID:], id)
	le.PutUint64(h[fPayloadSum:], xxhash.Sum64(payload))
	le.PutUint64(h[fHeaderSum:], xxhash.Sum64(h[:fHeaderSum]))
	return h
}

// parseHeader validates a frame header and returns the frame it starts,
// without payload, and the payload's length and checksum.
func parseHeader(h []byte) (frame, int, uint64, error) {
	if string(h[:4]) != frameMagic {
		return frame{}, 0, 0, fmt.Errorf("frame magic %q: %w", h[:4], ErrProtocol)
	}
	if sum, want := le.Uint64(h[fHeaderSum:]), xxhash.Sum64(h[:fHeaderSum]); sum != want {
		return frame{}, 0, 0, fmt.Errorf("frame header checksum %#x, computed %#x: %w", sum, want, ErrProtocol)
	}
	if v := h[fVersion]; v != Version {
		return frame{}, 0, 0, fmt.Errorf("frame of protocol version %d, this build speaks %d: %w", v, Version, ErrProtocol)
	}
	t := msgType(h[fType])
	if t < 1 || t > maxType {
		return frame{}, 0, 0, fmt.Errorf("frame type %d: %w", h[fType], ErrProtocol)
	}
	if le.Uint16(h[fReserved16:]) != 0 || le.Uint32(h[fReserved32:]) != 0 {
		return frame{}, 0, 0, fmt.Errorf("%s frame: reserved header bytes are not zero: %w", t, ErrProtocol)
	}
	n := le.Uint32(h[fLength:])
	if limit := maxPayload(t); int64(n) > int64(limit) {
		return frame{}, 0, 0, fmt.Errorf("%s frame: payload of %d bytes exceeds the %d of its type: %w", t, n, limit, ErrProtocol)
	}
	return frame{t: t, epoch: le.Uint64(h[fEpoch:]), id: le.Uint64(h[fID:])}, int(n), le.Uint64(h[fPayloadSum:]), nil
}

// decodeFrame decodes the frame at the start of b and returns it with the
// number of bytes it takes.
func decodeFrame(b []byte) (frame, int, error) {
	if len(b) < headerSize {
		return frame{}, 0, fmt.Errorf("%d bytes, a frame header needs %d: %w", len(b), headerSize, ErrProtocol)
	}
	f, n, sum, err := parseHeader(b[:headerSize])
	if err != nil {
		return frame{}, 0, err
	}
	if len(b)-headerSize < n {
		return frame{}, 0, fmt.Errorf("%s frame: %d payload bytes of %d: %w", f.t, len(b)-headerSize, n, ErrProtocol)
	}
	f.payload = b[headerSize : headerSize+n]
	if got := xxhash.Sum64(f.payload); got != sum {
		return frame{}, 0, fmt.Errorf("%s frame %d: payload checksum %#x, computed %#x: %w", f.t, f.id, sum, got, ErrProtocol)
	}
	return f, headerSize + n, nil
}

// frameReader reads frames from a stream. A payload buffer grows only as
// bytes arrive, so a header announcing a large payload costs nothing until
// the payload is sent.
type frameReader struct {
	r   *bufio.Reader
	hdr [headerSize]byte
	buf []byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next reads the next frame; its payload is valid until the next call.
func (r *frameReader) next() (frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return frame{}, err
	}
	f, n, sum, err := parseHeader(r.hdr[:])
	if err != nil {
		return frame{}, err
	}
	buf := r.buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, max(2*cap(buf), 64<<10)))
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r.r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if err != nil {
			return frame{}, fmt.Errorf("%s frame %d: stream ended after %d of %d payload bytes: %w", f.t, f.id, len(buf), n, io.ErrUnexpectedEOF)
		}
	}
	if cap(buf) <= 4<<20 {
		r.buf = buf
	}
	if got := xxhash.Sum64(buf); got != sum {
		return frame{}, fmt.Errorf("%s frame %d: payload checksum %#x, computed %#x: %w", f.t, f.id, sum, got, ErrProtocol)
	}
	f.payload = buf
	return f, nil
}
