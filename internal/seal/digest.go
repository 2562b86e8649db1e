package seal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/pmemgo/pmemgo"
)

// A record binds a line to its pool and its offset, not to a version: a
// record put back from an older state of its line would still open. So a
// sealed file also carries a keyed digest of its whole plaintext, which
// an older record changes:
//
//	[512, 640)   digest key record: 32 random bytes, the key of the digest
//	[640, 768)   digest record: what the digest was at a known point
//
// The digest is the XOR, over the pool's lines that are not zero, of the
// first 8 bytes of HMAC-SHA256(digest key, line offset ‖ line). It is
// kept up to date line by line as lines are written, and it depends on
// the plaintext only, so resealing (key rotation, snapshots sealed under
// new nonces) leaves it as it is. The digest key is random per pool and
// sealed under the pool key, so a key rotation only reseals its record.
//
// The digest record says which kind of point it describes:
//
//   - DigestExact: the records hold exactly the digest's plaintext. A
//     pool closed cleanly, a replica (every batch carries one), a backup
//     or a snapshot image. An open whose computed digest differs refuses
//     the file.
//   - DigestOpen: a session that writes the pool has it open; after a
//     crash the records are a mix of the last fences' states that no
//     record describes, so the digest is not checked.
//
// Both records are sealed like lines, with associated data that names
// their header offset (DigestAD), which no line offset can equal.
const (
	// DigestKeyOff is the file offset of the digest key record.
	DigestKeyOff = 512
	// DigestOff is the file offset of the digest record.
	DigestOff = 640

	// DigestExact and DigestOpen are the kinds of digest record.
	DigestExact = 1
	DigestOpen  = 2

	digestKeyLen = 32
	digestMagic  = "PMEMDGST"
)

// DigestAD returns the offset a header record at file offset fileOff is
// sealed and opened with: one no line of a pool can have.
func DigestAD(fileOff int64) int64 { return -1 - fileOff }

// NewDigestKey returns a fresh random digest key.
func NewDigestKey() ([]byte, error) {
	k := make([]byte, digestKeyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("digest key: %w", err)
	}
	return k, nil
}

// SealDigestKey writes into rec the digest key record of dkey.
func (s *Sealer) SealDigestKey(rec []byte, dkey []byte) {
	var line [LineSize]byte
	copy(line[:], dkey)
	s.Seal(rec, DigestAD(DigestKeyOff), line[:])
}

// OpenDigestKey opens the digest key record rec. A blank record, or one
// that does not open, is an error naming its offset.
func (o *Opener) OpenDigestKey(rec []byte) ([]byte, error) {
	if IsBlank(rec) {
		return nil, fmt.Errorf("sealed file has no digest key at file offset %d: %w", DigestKeyOff, pmemgo.ErrCorrupt)
	}
	var line [LineSize]byte
	if err := o.Open(line[:], rec, DigestAD(DigestKeyOff), DigestKeyOff); err != nil {
		return nil, err
	}
	return line[:digestKeyLen], nil
}

// DigestState is a decoded digest record.
type DigestState struct {
	Kind byte
	// Epoch and Seq name the replicated batch a replica's digest record
	// came with; zero elsewhere.
	Epoch, Seq uint64
	Digest     uint64
}

// SealDigest writes into rec the digest record of st.
func (s *Sealer) SealDigest(rec []byte, st DigestState) {
	var line [LineSize]byte
	copy(line[:], digestMagic)
	line[8] = st.Kind
	binary.LittleEndian.PutUint64(line[16:], st.Epoch)
	binary.LittleEndian.PutUint64(line[24:], st.Seq)
	binary.LittleEndian.PutUint64(line[32:], st.Digest)
	s.Seal(rec, DigestAD(DigestOff), line[:])
}

// OpenDigest opens the digest record rec.
func (o *Opener) OpenDigest(rec []byte) (DigestState, error) {
	if IsBlank(rec) {
		return DigestState{}, fmt.Errorf("sealed file has no digest record at file offset %d: %w", DigestOff, pmemgo.ErrCorrupt)
	}
	var line [LineSize]byte
	if err := o.Open(line[:], rec, DigestAD(DigestOff), DigestOff); err != nil {
		return DigestState{}, err
	}
	st := DigestState{
		Kind:   line[8],
		Epoch:  binary.LittleEndian.Uint64(line[16:]),
		Seq:    binary.LittleEndian.Uint64(line[24:]),
		Digest: binary.LittleEndian.Uint64(line[32:]),
	}
	if string(line[:8]) != digestMagic || (st.Kind != DigestExact && st.Kind != DigestOpen) {
		return DigestState{}, fmt.Errorf("digest record at file offset %d: kind %d: %w", DigestOff, st.Kind, pmemgo.ErrCorrupt)
	}
	return st, nil
}

// Check compares the digest computed over a file's plaintext with st, the
// file's digest record: an exact record must match.
func (st DigestState) Check(computed uint64) error {
	if st.Kind != DigestExact || st.Digest == computed {
		return nil
	}
	where := "the state it was closed in"
	if st.Seq != 0 {
		where = fmt.Sprintf("batch %d of epoch %d", st.Seq, st.Epoch)
	}
	return fmt.Errorf("sealed file's lines do not match the digest record at file offset %d (%s): a record was put back from an older state of its line, or removed: %w",
		DigestOff, where, pmemgo.ErrCorrupt)
}

// Digester computes the digest values of lines under one digest key. It
// is used by one goroutine at a time.
type Digester struct {
	mac hash.Hash
	buf [8 + LineSize]byte
	sum [sha256.Size]byte
}

// NewDigester returns a Digester for dkey.
func NewDigester(dkey []byte) *Digester {
	return &Digester{mac: hmac.New(sha256.New, dkey)}
}

// Line returns the digest value of line, the LineSize bytes at pool
// offset off: zero for a line of zeros, so that a blank record and a
// sealed line of zeros count alike.
func (d *Digester) Line(off int64, line []byte) uint64 {
	if IsZeroLine(line) {
		return 0
	}
	binary.LittleEndian.PutUint64(d.buf[:8], uint64(off))
	copy(d.buf[8:], line[:LineSize])
	d.mac.Reset()
	d.mac.Write(d.buf[:])
	return binary.LittleEndian.Uint64(d.mac.Sum(d.sum[:0]))
}

// NewFile returns the header page (HeaderSize bytes) of a new sealed file
// of the pool uuid of size bytes under k: the header, a fresh digest key
// record, and an exact digest record of a pool of zeros. It also returns
// the session that sealed them and the digest key, for a writer that goes
// on to seal the pool's lines and then the digest record of what it wrote.
func (k *Keys) NewFile(uuid [16]byte, size int64) (page []byte, s *Sealer, dkey []byte, err error) {
	hdr, err := NewHeader(k, uuid, size)
	if err != nil {
		return nil, nil, nil, err
	}
	if s, err = k.NewSealer(uuid); err != nil {
		return nil, nil, nil, err
	}
	if dkey, err = NewDigestKey(); err != nil {
		return nil, nil, nil, err
	}
	page = make([]byte, HeaderSize)
	hdr.Encode(page)
	s.SealDigestKey(page[DigestKeyOff:], dkey)
	s.SealDigest(page[DigestOff:], DigestState{Kind: DigestExact})
	return page, s, dkey, nil
}
