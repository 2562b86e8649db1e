package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/pmemgo/pmemgo"
)

// HKDF info strings: one per use of the pool key, so that no derived key
// serves two purposes.
const (
	infoKeyID   = "pmemgo seal v1 key id"
	infoMAC     = "pmemgo seal v1 header mac"
	infoSession = "pmemgo seal v1 line session"
)

// Keys are the keys derived from one pool key.
type Keys struct {
	master [KeySize]byte
	id     [16]byte
	mac    [32]byte
}

// NewKeys derives the keys of a pool key, which must be KeySize bytes.
func NewKeys(key []byte) (*Keys, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("pool key has %d bytes, want %d: %w", len(key), KeySize, pmemgo.ErrBadKey)
	}
	k := &Keys{}
	copy(k.master[:], key)
	id, err := hkdf.Key(sha256.New, key, nil, infoKeyID, len(k.id))
	if err != nil {
		return nil, err
	}
	mac, err := hkdf.Key(sha256.New, key, nil, infoMAC, len(k.mac))
	if err != nil {
		return nil, err
	}
	copy(k.id[:], id)
	copy(k.mac[:], mac)
	return k, nil
}

// ID returns the key id a sealed header made with k carries.
func (k *Keys) ID() [16]byte { return k.id }

// session returns the AEAD of the session named by salt.
func (k *Keys) session(salt []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, k.master[:], salt, infoSession, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// adLen is the size of a record's associated data: the pool UUID and the
// line's pool offset, which bind the record to its pool and its line.
const adLen = 24

func associated(ad *[adLen]byte, uuid *[16]byte, off int64) {
	copy(ad[:16], uuid[:])
	binary.LittleEndian.PutUint64(ad[16:], uint64(off))
}

// Sealer seals lines for one pool under a session key of its own. It is
// used by one goroutine at a time, as a Device is.
//
// Nonces never repeat under one key: each Sealer draws a fresh random
// 128-bit salt, from which its AES key is derived, and numbers its nonces
// with a counter that only grows. Two sessions share a key only if they
// drew the same salt, a chance of about n²/2^129 for n sessions, and the
// counter cannot wrap: 2^64 seals at 100 ns each take 58,000 years.
type Sealer struct {
	uuid [16]byte
	salt [saltLen]byte
	aead cipher.AEAD
	ctr  uint64
	// ad is scratch kept here so that sealing does not allocate.
	ad [adLen]byte
}

// NewSealer starts a sealing session for the pool uuid.
func (k *Keys) NewSealer(uuid [16]byte) (*Sealer, error) {
	s := &Sealer{uuid: uuid}
	if _, err := rand.Read(s.salt[:]); err != nil {
		return nil, fmt.Errorf("session salt: %w", err)
	}
	aead, err := k.session(s.salt[:])
	if err != nil {
		return nil, err
	}
	s.aead = aead
	return s, nil
}

// Seal writes into rec, RecordSize bytes, the record of plain, the
// LineSize bytes of the line at pool offset off.
func (s *Sealer) Seal(rec []byte, off int64, plain []byte) {
	rec = rec[:RecordSize]
	copy(rec, s.salt[:])
	clear(rec[nonceOff : nonceOff+4])
	s.ctr++
	binary.BigEndian.PutUint64(rec[nonceOff+4:], s.ctr)
	associated(&s.ad, &s.uuid, off)
	s.aead.Seal(rec[dataOff:dataOff], rec[nonceOff:nonceOff+nonceLen], plain[:LineSize], s.ad[:])
	clear(rec[padOff:])
}

// Opener opens the records of one pool, whatever session sealed them. It
// may be used from several goroutines.
type Opener struct {
	keys     *Keys
	prev     *Keys
	uuid     [16]byte
	sessions sync.Map // [saltLen]byte -> cipher.AEAD
}

// NewOpener returns the Opener of the pool uuid's records.
func (k *Keys) NewOpener(uuid [16]byte) *Opener {
	return &Opener{keys: k, uuid: uuid}
}

// NewRotatingOpener returns the Opener of the records of the pool uuid
// whose key is being rotated from prev to k: a record that does not open
// under k is tried under prev.
func (k *Keys) NewRotatingOpener(prev *Keys, uuid [16]byte) *Opener {
	return &Opener{keys: k, prev: prev, uuid: uuid}
}

// Open writes into plain, LineSize bytes, the line at pool offset off held
// by rec, the record at file offset fileOff. A zero record gives zeros. A
// record that does not open, because it was changed, moved from another
// line or comes from another pool or key, is an error naming fileOff.
func (o *Opener) Open(plain, rec []byte, off, fileOff int64) error {
	rec = rec[:RecordSize]
	if isZero(rec) {
		clear(plain[:LineSize])
		return nil
	}
	if err := CheckRecord(rec, fileOff); err != nil {
		return err
	}
	var ad [adLen]byte
	associated(&ad, &o.uuid, off)
	var salt [saltLen]byte
	copy(salt[:], rec)
	if a, ok := o.sessions.Load(salt); ok {
		if _, err := a.(cipher.AEAD).Open(plain[:0:LineSize], rec[nonceOff:nonceOff+nonceLen], rec[dataOff:padOff], ad[:]); err == nil {
			return nil
		}
		return notAuthentic(off, fileOff)
	}
	// A session not seen yet: its key is derived from the pool key, or
	// during a rotation from either key, whichever opens the record.
	for _, k := range []*Keys{o.keys, o.prev} {
		if k == nil {
			continue
		}
		a, err := k.session(salt[:])
		if err != nil {
			return err
		}
		if _, err := a.Open(plain[:0:LineSize], rec[nonceOff:nonceOff+nonceLen], rec[dataOff:padOff], ad[:]); err == nil {
			o.sessions.Store(salt, a)
			return nil
		}
	}
	return notAuthentic(off, fileOff)
}

func notAuthentic(off, fileOff int64) error {
	return fmt.Errorf("sealed record of pool offset %d at file offset %d does not authenticate (changed, moved, or from another pool): %w",
		off, fileOff, pmemgo.ErrCorrupt)
}
