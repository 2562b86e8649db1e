package recovery

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// sealedCheckBlock is how much of a sealed file a check reads at a time.
const sealedCheckBlock = 1 << 20

// IsSealedFile reports whether the file at path starts with a sealed-file
// header's magic: a sealed (encrypted) pool, whose header and content the
// ordinary checker cannot read.
func IsSealedFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, len(seal.Magic))
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return seal.IsSealed(b[:n]), nil
}

// CheckSealedFile checks the sealed pool file at path without writing it,
// calling yield for every problem found until it returns false.
//
// Without a key only the sealed file's structure can be checked: the
// header's checksum, version and geometry, the file's size, and that every
// record is blank or well formed. Whether a record authenticates, and the
// pool inside, need the key. With key, the header must have been made
// with it (else an error wrapping pmemgo.ErrBadKey), every record is
// opened (one that does not authenticate is a problem at its file offset,
// and its line is taken as zeros), the lines must match the file's exact
// digest record when it has one (else a record was put back from an older
// state of its line: a problem at the digest record's offset), and the
// plaintext pool is then checked
// as CheckFileOptions does, in memory; those problems carry pool offsets.
func CheckSealedFile(path string, key []byte, opts *CheckOptions, yield func(Problem) bool) (CheckStats, error) {
	plain, more, err := unseal(path, key, yield)
	if plain != nil {
		defer plain.Close()
	}
	if err != nil || !more || plain == nil {
		return CheckStats{}, err
	}
	return CheckFileOptions(memfdPath(plain), opts, yield)
}

// UnsealFile opens every record of the sealed pool file at path with key
// into an anonymous file in memory, and returns it: the plaintext pool,
// for the tools that read pool files. A record that does not
// authenticate is an error naming its file offset. The caller closes the
// file; MemfdPath names it for functions that take a path.
func UnsealFile(path string, key []byte) (*os.File, error) {
	if key == nil {
		return nil, fmt.Errorf("unseal %s: no key: %w", path, pmemgo.ErrBadKey)
	}
	var first error
	plain, _, err := unseal(path, key, func(p Problem) bool {
		first = fmt.Errorf("unseal %s: %w", path, p.Err)
		return false
	})
	if err == nil {
		err = first
	}
	if err != nil {
		if plain != nil {
			plain.Close()
		}
		return nil, err
	}
	return plain, nil
}

// MemfdPath returns a path that opens f, an anonymous file UnsealFile made.
func MemfdPath(f *os.File) string { return memfdPath(f) }

func memfdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// unseal checks the records of the sealed file at path, opening them into
// a new anonymous file when key is set. It returns false once yield asked
// to stop.
func unseal(path string, key []byte, yield func(Problem) bool) (*os.File, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if err := Lock(f, false, -1); err != nil {
		return nil, false, fmt.Errorf("check %s: %w", path, err)
	}
	hdr, err := device.ReadSealedHeader(f)
	if err != nil {
		return nil, false, fmt.Errorf("check %s: %w", path, err)
	}
	if key == nil {
		head := make([]byte, seal.HeaderSize)
		if _, err := f.ReadAt(head, 0); err != nil {
			return nil, false, fmt.Errorf("check %s: %w", path, err)
		}
		for _, off := range []int64{seal.DigestKeyOff, seal.DigestOff} {
			rec := head[off : off+seal.RecordSize]
			err := seal.CheckRecord(rec, off)
			if err == nil && seal.IsBlank(rec) {
				err = fmt.Errorf("sealed file has no digest record at file offset %d: %w", off, pmemgo.ErrCorrupt)
			}
			if err != nil && !yield(Problem{Kind: "record", Offset: off, Where: "sealed digest record", Err: err}) {
				return nil, false, nil
			}
		}
		more, err := checkRecords(f, &hdr, nil, nil, nil, yield)
		return nil, more, err
	}
	keys, err := seal.NewKeys(key)
	if err != nil {
		return nil, false, err
	}
	if err := keys.Verify(&hdr); err != nil {
		return nil, false, fmt.Errorf("check %s: %w", path, err)
	}
	if hdr.Rotating() {
		return nil, false, fmt.Errorf("check %s: the pool's key is being rotated from key id %x; finish the rotation (heap.RotateKey) to check it with a key: %w",
			path, hdr.PrevKeyID[:8], pmemgo.ErrBadKey)
	}
	fd, err := unix.MemfdCreate("pmemgo-unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, false, fmt.Errorf("check %s: %w", path, err)
	}
	plain := os.NewFile(uintptr(fd), "pmemgo-unsealed")
	if err := plain.Truncate(int64(hdr.PoolSize)); err != nil {
		plain.Close()
		return nil, false, fmt.Errorf("check %s: %w", path, err)
	}
	open := keys.NewOpener(hdr.UUID)
	head := make([]byte, seal.HeaderSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		plain.Close()
		return nil, false, fmt.Errorf("check %s: %w", path, err)
	}
	var d *digestCheck
	dkey, err := open.OpenDigestKey(head[seal.DigestKeyOff:])
	if err != nil {
		// The lines are still checked, but no digest can be.
		if !yield(Problem{Kind: "record", Offset: seal.DigestKeyOff, Where: "sealed digest key", Err: err}) {
			return plain, false, nil
		}
	} else {
		d = &digestCheck{dg: seal.NewDigester(dkey)}
	}
	st, stErr := open.OpenDigest(head[seal.DigestOff:])
	more, err := checkRecords(f, &hdr, open, plain, d, yield)
	if err != nil || !more || d == nil {
		return plain, more, err
	}
	if stErr == nil {
		stErr = st.Check(d.sum)
	}
	if stErr != nil {
		more = yield(Problem{Kind: "digest", Offset: seal.DigestOff, Where: "sealed digest", Err: stErr})
	}
	return plain, more, nil
}

// digestCheck sums the digest of the lines a check opened.
type digestCheck struct {
	dg  *seal.Digester
	sum uint64
}

// checkRecords checks every record of f, opening it into plain and
// summing its digest into d when open is set. It returns false once yield
// asked to stop.
func checkRecords(f *os.File, hdr *seal.Header, open *seal.Opener, plain *os.File, d *digestCheck, yield func(Problem) bool) (bool, error) {
	buf := make([]byte, sealedCheckBlock)
	line := make([]byte, seal.LineSize)
	lines := hdr.Lines()
	perBlock := int64(sealedCheckBlock / seal.RecordSize)
	for first := int64(0); first < lines; first += perBlock {
		n := min(perBlock, lines-first)
		block := buf[:n*seal.RecordSize]
		if _, err := f.ReadAt(block, seal.HeaderSize+first*seal.RecordSize); err != nil {
			return false, fmt.Errorf("read sealed records: %w", err)
		}
		for i := range n {
			rec := block[i*seal.RecordSize:][:seal.RecordSize]
			if seal.IsBlank(rec) {
				continue
			}
			off := (first + i) * seal.LineSize
			fileOff := seal.RecordOff(off)
			err := seal.CheckRecord(rec, fileOff)
			if err == nil && open != nil {
				if err = open.Open(line, rec, off, fileOff); err == nil {
					if d != nil {
						d.sum ^= d.dg.Line(off, line)
					}
					_, err = plain.WriteAt(line, off)
					if err != nil {
						return false, err
					}
					continue
				}
			}
			if err != nil && !yield(Problem{Kind: "record", Offset: fileOff, Where: "sealed record", Err: err}) {
				return false, nil
			}
		}
	}
	return true, nil
}
