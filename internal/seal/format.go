// Package seal is the on-media format of a sealed (encrypted) pool file and
// the AEAD that seals it. It is the only package that knows the sealed
// file's byte offsets.
//
// A sealed file holds a pool of Size bytes as one record per 64-byte line
// (all integers little-endian):
//
//	[0, 4096)                    sealed-file header (plaintext)
//	[512, 768)                   digest key and digest records (see digest.go)
//	[4096 + 128*i, +128)         record of pool line i, at pool offset 64*i
//
// The header names the pool (UUID, size) and the key (KeyID, a key
// derivation of the key, so that a wrong key is told apart from damage),
// carries a MAC made with the key and an xxhash checksum that anyone can
// verify. While the pool's key is being rotated, PrevKeyID names the key
// that records not yet resealed were sealed with. A record is
//
//	[0, 16)    salt: names the session key that sealed it
//	[16, 28)   nonce: 4 zero bytes, then the session's 64-bit counter
//	[28, 92)   ciphertext of the line
//	[92, 108)  tag
//	[108, 128) zero
//
// sealed with AES-256-GCM under a session key derived by HKDF-SHA256 from
// the pool key and the salt, with the pool UUID and the line's pool offset
// as associated data: a record moved to another line or another pool fails
// to open. A record of zeros is a line never written: it reads as zeros.
// Records are 128 bytes so that none straddles a 512-byte sector: a crash
// leaves each record old or new, never torn, on storage that writes
// sectors atomically.
package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

const (
	// Magic starts every sealed file.
	Magic = "PMEMSEAL"
	// Version is the sealed format version this package reads and writes.
	// Version 2 added the digest records.
	Version = 2
	// HeaderSize is the space before the first record.
	HeaderSize = 4096
	// LineSize is the plaintext each record holds.
	LineSize = 64
	// RecordSize is the size of one record.
	RecordSize = 128
	// KeySize is the size of a pool key.
	KeySize = 32
	// AlgAESGCM is AES-256-GCM with HKDF-SHA256 session keys and counter
	// nonces, the only algorithm.
	AlgAESGCM = 1

	saltLen   = 16
	nonceOff  = saltLen
	nonceLen  = 12
	dataOff   = nonceOff + nonceLen
	tagOff    = dataOff + LineSize
	tagLen    = 16
	padOff    = tagOff + tagLen
	headerUse = 120
	macOff    = 80
	sumOff    = 112
)

// Header is the decoded sealed-file header.
type Header struct {
	Version    uint32
	RecordSize uint32
	Alg        uint32
	UUID       [16]byte
	// PoolSize is the plaintext pool's size, a multiple of LineSize.
	PoolSize uint64
	KeyID    [16]byte
	// PrevKeyID, when not zero, is the id of the key the pool is being
	// rotated from: records may be sealed with either.
	PrevKeyID [16]byte
	MAC       [32]byte
}

// Rotating reports whether the header names a previous key.
func (h *Header) Rotating() bool { return h.PrevKeyID != [16]byte{} }

// Lines returns the number of records the header's pool has.
func (h *Header) Lines() int64 { return int64(h.PoolSize / LineSize) }

// FileSize returns the size of a sealed file holding a pool of size bytes.
func FileSize(size int64) int64 { return HeaderSize + size/LineSize*RecordSize }

// RecordOff returns the file offset of the record of the line at pool
// offset off.
func RecordOff(off int64) int64 { return HeaderSize + off/LineSize*RecordSize }

// IsSealed reports whether b, the start of a file, starts a sealed file.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, []byte(Magic)) }

// NewHeader returns the header of a sealed pool of size bytes with the
// given identity, sealed under k.
func NewHeader(k *Keys, uuid [16]byte, size int64) (Header, error) {
	if size <= 0 || size%LineSize != 0 {
		return Header{}, fmt.Errorf("sealed pool size %d is not a positive multiple of %d: %w", size, LineSize, pmemgo.ErrInvalidOptions)
	}
	h := Header{Version: Version, RecordSize: RecordSize, Alg: AlgAESGCM, UUID: uuid, PoolSize: uint64(size)}
	h.Rekey(k, nil)
	return h, nil
}

// Rekey makes h the header of its pool sealed under k, being rotated from
// prev when prev is not nil, and MACs it with k.
func (h *Header) Rekey(k, prev *Keys) {
	h.KeyID, h.PrevKeyID = k.id, [16]byte{}
	if prev != nil {
		h.PrevKeyID = prev.id
	}
	var b [HeaderSize]byte
	h.encodeFields(b[:])
	h.MAC = k.headerMAC(b[:macOff])
}

func (h *Header) encodeFields(b []byte) {
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], h.Version)
	binary.LittleEndian.PutUint32(b[12:], h.RecordSize)
	binary.LittleEndian.PutUint32(b[16:], h.Alg)
	copy(b[24:40], h.UUID[:])
	binary.LittleEndian.PutUint64(b[40:], h.PoolSize)
	copy(b[48:64], h.KeyID[:])
	copy(b[64:80], h.PrevKeyID[:])
}

// Encode writes the header into b, which must hold HeaderSize bytes. It
// writes the header's own bytes only, leaving the digest records that
// share its page as they are.
func (h *Header) Encode(b []byte) {
	clear(b[:headerUse])
	h.encodeFields(b)
	copy(b[macOff:], h.MAC[:])
	binary.LittleEndian.PutUint64(b[sumOff:], xxhash.Sum64(b[:sumOff]))
}

// DecodeHeader decodes and checks the structure of a sealed-file header:
// magic, checksum, version and geometry. It needs no key; Keys.Verify
// checks that the header was made with a key.
func DecodeHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < headerUse || !IsSealed(b) {
		return h, fmt.Errorf("no sealed-file header at offset 0: %w", pmemgo.ErrNotPool)
	}
	if got, want := binary.LittleEndian.Uint64(b[sumOff:]), xxhash.Sum64(b[:sumOff]); got != want {
		return h, fmt.Errorf("sealed-file header at offset 0: checksum %#x, want %#x: %w", got, want, pmemgo.ErrCorrupt)
	}
	h.Version = binary.LittleEndian.Uint32(b[8:])
	h.RecordSize = binary.LittleEndian.Uint32(b[12:])
	h.Alg = binary.LittleEndian.Uint32(b[16:])
	copy(h.UUID[:], b[24:40])
	h.PoolSize = binary.LittleEndian.Uint64(b[40:])
	copy(h.KeyID[:], b[48:64])
	copy(h.PrevKeyID[:], b[64:80])
	copy(h.MAC[:], b[macOff:sumOff])
	switch {
	case h.Version != Version:
		return h, fmt.Errorf("sealed-file header at offset 0: version %d, this build reads %d: %w", h.Version, Version, pmemgo.ErrVersion)
	case h.RecordSize != RecordSize || h.Alg != AlgAESGCM:
		return h, fmt.Errorf("sealed-file header at offset 0: record size %d, algorithm %d, want %d and %d: %w",
			h.RecordSize, h.Alg, RecordSize, AlgAESGCM, pmemgo.ErrCorrupt)
	case h.PoolSize == 0 || h.PoolSize%LineSize != 0 || h.PoolSize > 1<<50:
		return h, fmt.Errorf("sealed-file header at offset 0: pool size %d: %w", h.PoolSize, pmemgo.ErrCorrupt)
	}
	return h, nil
}

// CheckRecord checks what can be checked of the record at file offset
// fileOff without the key: a record is all zeros, or its nonce's fixed
// bytes and its padding are zero.
func CheckRecord(rec []byte, fileOff int64) error {
	if isZero(rec) {
		return nil
	}
	if !isZero(rec[nonceOff:nonceOff+4]) || !isZero(rec[padOff:RecordSize]) {
		return fmt.Errorf("sealed record at file offset %d: malformed (nonce or padding not zero): %w", fileOff, pmemgo.ErrCorrupt)
	}
	return nil
}

// zeros is compared against: bytes.Equal runs as vector code, several
// times quicker than a loop over words on a pool's worth of records.
var zeros [RecordSize]byte

func isZero(b []byte) bool {
	for len(b) > RecordSize {
		if !bytes.Equal(b[:RecordSize], zeros[:]) {
			return false
		}
		b = b[RecordSize:]
	}
	return bytes.Equal(b, zeros[:len(b)])
}

// Verify checks that h was made with k: its key id names k and its MAC
// holds. A different key is ErrBadKey; a header whose MAC fails under the
// right key was changed, which is corruption.
func (k *Keys) Verify(h *Header) error {
	if h.KeyID != k.id {
		if h.PrevKeyID == k.id {
			return fmt.Errorf("sealed pool is being rotated from this key (id %x) to key id %x: open it with the new key, and this one as the old key: %w",
				k.id[:8], h.KeyID[:8], pmemgo.ErrBadKey)
		}
		return fmt.Errorf("sealed pool was sealed with key id %x, this key's id is %x: %w", h.KeyID[:8], k.id[:8], pmemgo.ErrBadKey)
	}
	var b [HeaderSize]byte
	h.encodeFields(b[:])
	if want := k.headerMAC(b[:macOff]); !hmac.Equal(want[:], h.MAC[:]) {
		return fmt.Errorf("sealed-file header at offset 0: MAC does not verify: %w", pmemgo.ErrCorrupt)
	}
	return nil
}

func (k *Keys) headerMAC(fields []byte) [32]byte {
	m := hmac.New(sha256.New, k.mac[:])
	m.Write(fields)
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// IsBlank reports whether rec is a record of zeros: a line never written.
func IsBlank(rec []byte) bool { return isZero(rec[:RecordSize]) }

// IsZeroLine reports whether line, LineSize bytes, is all zeros.
func IsZeroLine(line []byte) bool { return isZero(line[:LineSize]) }
