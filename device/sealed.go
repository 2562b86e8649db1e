package device

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// FileFormat is implemented by a Mapper whose files do not hold the pool's
// bytes as they are, such as Sealed, which keeps them encrypted. A new
// pool's file is made by Format instead of being sized to the pool, and
// the pool's header is read through PoolReader before the pool is mapped.
type FileFormat interface {
	// Format makes the empty file f hold a pool of size zero bytes with
	// the given identity.
	Format(f *os.File, size int64, uuid [16]byte) error
	// PoolReader returns a reader of the pool's bytes in f and the pool's
	// size.
	PoolReader(f *os.File) (r io.ReaderAt, size int64, err error)
}

// Sealed is the Mapper of sealed pool files: the file holds every 64-byte
// line of the pool encrypted and authenticated (see package
// internal/seal), while the process works on the plaintext in private
// anonymous memory. Flush seals the lines of its range into the file's
// mapping and flushes their records through the inner device; Fence is the
// inner device's. Only lines flushed are ever sealed, and nothing reaches
// the file unsealed.
type Sealed struct {
	// Key is the pool key, 32 bytes.
	Key []byte
	// OldKey is the key the pool is being rotated from (see BeginRekey),
	// needed to open a pool whose rotation did not finish; nil otherwise.
	OldKey []byte
	// Inner maps the sealed file itself and makes its records durable:
	// Msync when nil. An Emulator here gives crash images of the sealed
	// file; Private, a read-only open.
	Inner Mapper
}

// Map maps the pool of size bytes sealed in f: it checks the sealed
// header against the key, maps the file through the inner device, and
// opens every record into anonymous memory placed where req asks. A
// record that does not authenticate is an error naming its file offset.
func (s Sealed) Map(f *os.File, size int, req MapRequest) (Device, error) {
	keys, prev, hdr, err := s.header(f)
	if err != nil {
		return nil, err
	}
	// The header may say more than the pool holds: a growth that a crash
	// interrupted after rewriting it (see Grow).
	if uint64(size) > hdr.PoolSize {
		return nil, fmt.Errorf("sealed file %s holds a pool of %d bytes, not %d: %w", f.Name(), hdr.PoolSize, size, pmemgo.ErrCorrupt)
	}
	inner := s.Inner
	if inner == nil {
		inner = Msync{}
	}
	sealer, err := keys.NewSealer(hdr.UUID)
	if err != nil {
		return nil, err
	}
	// The plaintext is mapped first, so that the sealed file's mapping
	// cannot take the address the pool's pointers are relative to. Asked
	// to reserve room to grow, both are mapped in reservations.
	var grow *mapping
	var plain []byte
	var unmap func() error
	innerReq := MapRequest{}
	// Address space that cannot be had (the file's reservation is twice
	// the pool's) leaves a pool that does not grow, rather than none.
	if req.Reserve > size {
		if grow, err = mapAnonGrowable(size, req); err == nil {
			plain, unmap = grow.data, grow.unmap
			innerReq.Reserve = int(seal.FileSize(int64(req.Reserve)))
		}
	}
	if grow == nil {
		if plain, unmap, err = mapAnon(size, req); err != nil {
			return nil, err
		}
	}
	dev, err := inner.Map(f, int(seal.FileSize(int64(size))), innerReq)
	if err != nil && innerReq.Reserve != 0 {
		grow = nil
		dev, err = inner.Map(f, int(seal.FileSize(int64(size))), MapRequest{})
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sealed file: %w", err), unmap())
	}
	d := &sealedDevice{plain: plain, unmapPlain: unmap, grow: grow, file: f, inner: dev, recs: dev.Bytes(), sealer: sealer, keys: keys, prev: prev, hdr: hdr}
	// Where the inner mapping is the file's, the records are read with
	// pread: the kernel copies them from the page cache, where reading
	// the mapping would fault on each of its pages first (10-20 us a page
	// on a VM with shadow paging: most of an open's time).
	var src io.ReaderAt
	if SharesFile(dev) {
		src = f
	}
	if err := d.openRecords(keys.NewRotatingOpener(prev, hdr.UUID), src); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// openRecords opens every record into the plaintext and checks the
// file's digest against its digest record. The records are read from src
// when it is set, else from the mapping.
func (d *sealedDevice) openRecords(o *seal.Opener, src io.ReaderAt) error {
	dkey, err := o.OpenDigestKey(d.recs[seal.DigestKeyOff:])
	if err != nil {
		return err
	}
	st, err := o.OpenDigest(d.recs[seal.DigestOff:])
	if err != nil {
		return err
	}
	d.dkey, d.found = dkey, st
	d.dg = seal.NewDigester(dkey)
	d.lineDig = make([]uint64, len(d.plain)/seal.LineSize)
	if d.digest, err = openAll(o, d.plain, d.recs, src, dkey, d.lineDig); err != nil {
		return err
	}
	return st.Check(d.digest)
}

// header reads f's sealed header and checks it against the key and, for
// a pool whose key is being rotated, the old key, which it returns too.
func (s Sealed) header(f *os.File) (keys, prev *seal.Keys, hdr seal.Header, err error) {
	if keys, err = seal.NewKeys(s.Key); err != nil {
		return nil, nil, hdr, err
	}
	hdr, err = ReadSealedHeader(f)
	if errors.Is(err, pmemgo.ErrNotPool) {
		return nil, nil, hdr, fmt.Errorf("%s is not a sealed pool file, but a key was given: %w", f.Name(), pmemgo.ErrBadKey)
	}
	if err != nil {
		return nil, nil, hdr, err
	}
	if err := keys.Verify(&hdr); err != nil {
		return nil, nil, hdr, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if !hdr.Rotating() {
		return keys, nil, hdr, nil
	}
	if s.OldKey == nil {
		return nil, nil, hdr, fmt.Errorf("%s: the pool's key is being rotated from key id %x: give the old key too: %w", f.Name(), hdr.PrevKeyID[:8], pmemgo.ErrBadKey)
	}
	if prev, err = seal.NewKeys(s.OldKey); err != nil {
		return nil, nil, hdr, err
	}
	if prev.ID() != hdr.PrevKeyID {
		return nil, nil, hdr, fmt.Errorf("%s: the pool's key is being rotated from key id %x, the old key given has id %x: %w",
			f.Name(), hdr.PrevKeyID[:8], prev.ID(), pmemgo.ErrBadKey)
	}
	return keys, prev, hdr, nil
}

// ReadSealedHeader reads and decodes the sealed header of f, checking its
// structure and that f is at least as long as the header says. It needs
// no key.
func ReadSealedHeader(f *os.File) (seal.Header, error) {
	b := make([]byte, seal.HeaderSize)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return seal.Header{}, fmt.Errorf("read sealed header of %s: %w", f.Name(), err)
	}
	hdr, err := seal.DecodeHeader(b[:n])
	if err != nil {
		return hdr, err
	}
	fi, err := f.Stat()
	if err != nil {
		return hdr, err
	}
	// A longer file is a growth that a crash interrupted after extending
	// the file: the records past the pool's end are not read.
	if want := seal.FileSize(int64(hdr.PoolSize)); fi.Size() < want {
		return hdr, fmt.Errorf("sealed file %s is %d bytes, its header records %d: %w", f.Name(), fi.Size(), want, pmemgo.ErrTruncated)
	}
	return hdr, nil
}

// Format writes the sealed header of an empty pool of size bytes into f
// and sizes f: every record is zero, a line never written.
func (s Sealed) Format(f *os.File, size int64, uuid [16]byte) error {
	keys, err := seal.NewKeys(s.Key)
	if err != nil {
		return err
	}
	b, _, _, err := keys.NewFile(uuid, size)
	if err != nil {
		return err
	}
	if err := f.Truncate(seal.FileSize(size)); err != nil {
		return fmt.Errorf("size sealed file: %w", err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write sealed header: %w", err)
	}
	return nil
}

// PoolReader returns a reader that opens the records of f as it reads,
// for reading the pool header before mapping.
func (s Sealed) PoolReader(f *os.File) (io.ReaderAt, int64, error) {
	keys, prev, hdr, err := s.header(f)
	if err != nil {
		return nil, 0, err
	}
	return &sealedReader{f: f, open: keys.NewRotatingOpener(prev, hdr.UUID)}, int64(hdr.PoolSize), nil
}

// sealedReader reads a sealed file's plaintext through its records.
type sealedReader struct {
	f    *os.File
	open *seal.Opener
}

// ReadAt reads the plaintext pool bytes [off, off+len(p)).
func (r *sealedReader) ReadAt(p []byte, off int64) (int, error) {
	var rec [seal.RecordSize]byte
	var line [seal.LineSize]byte
	n := 0
	for n < len(p) {
		at := off + int64(n)
		lineOff := at &^ (seal.LineSize - 1)
		fileOff := seal.RecordOff(lineOff)
		if _, err := r.f.ReadAt(rec[:], fileOff); err != nil {
			return n, err
		}
		if err := r.open.Open(line[:], rec[:], lineOff, fileOff); err != nil {
			return n, err
		}
		n += copy(p[n:], line[at-lineOff:])
	}
	return n, nil
}

// openAll opens every record of recs (read from src when it is set)
// into plain, in parallel, and returns the pool's digest under dkey,
// keeping each line's part of it in lineDig. Zero records are skipped:
// anonymous memory is zero already, and leaving it untouched keeps a
// sparse pool's memory sparse.
func openAll(o *seal.Opener, plain, recs []byte, src io.ReaderAt, dkey []byte, lineDig []uint64) (uint64, error) {
	lines := len(plain) / seal.LineSize
	workers := runtime.GOMAXPROCS(0)
	per := (lines + workers - 1) / workers
	errs := make([]error, workers)
	digests := make([]uint64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, lines)
		if lo >= hi {
			break
		}
		wg.Go(func() {
			dg := seal.NewDigester(dkey)
			var sum uint64
			var buf []byte
			written := make([]int, 0, openBlockLines)
			if src != nil {
				buf = make([]byte, openBlockLines*seal.RecordSize)
			}
			for blk := lo; blk < hi; blk += openBlockLines {
				n := min(openBlockLines, hi-blk)
				first := seal.RecordOff(int64(blk) * seal.LineSize)
				block := recs[first : first+int64(n)*seal.RecordSize]
				if src != nil {
					block = buf[:n*seal.RecordSize]
					if _, err := src.ReadAt(block, first); err != nil {
						errs[w] = fmt.Errorf("sealed file: read records at file offset %d: %w", first, err)
						return
					}
				}
				written = written[:0]
				for i := range n {
					if !seal.IsBlank(block[i*seal.RecordSize : (i+1)*seal.RecordSize]) {
						written = append(written, i)
					}
				}
				populateWritten(plain[int64(blk)*seal.LineSize:int64(blk+n)*seal.LineSize], n, written)
				for _, i := range written {
					off := int64(blk+i) * seal.LineSize
					rec := block[i*seal.RecordSize : (i+1)*seal.RecordSize]
					line := plain[off : off+seal.LineSize]
					if err := o.Open(line, rec, off, first+int64(i)*seal.RecordSize); err != nil {
						errs[w] = err
						return
					}
					lineDig[blk+i] = dg.Line(off, line)
					sum ^= lineDig[blk+i]
				}
			}
			digests[w] = sum
		})
	}
	wg.Wait()
	var sum uint64
	for _, s := range digests {
		sum ^= s
	}
	return sum, errors.Join(errs...)
}

// openBlockLines is how many lines' records openAll reads at a time.
const openBlockLines = 8192

// populateWritten maps in the pages of plain, n lines of which the
// indexes written, in ascending order, are about to be written, with one
// system call when most of its pages will be: page by page, the first
// store to each faults, which costs more (10 us a page on this VM, most
// of an open's time). A block whose pages are mostly left blank is left
// alone, so that a sparse pool's memory stays sparse.
func populateWritten(plain []byte, n int, written []int) {
	linesPerPage := pageSize / seal.LineSize
	pages := (n + linesPerPage - 1) / linesPerPage
	touched, last := 0, -1
	for _, i := range written {
		if p := i / linesPerPage; p != last {
			touched, last = touched+1, p
		}
	}
	if 2*touched > pages {
		// Only a hint: a kernel without it (before 5.14) faults instead.
		_ = unix.Madvise(plain, unix.MADV_POPULATE_WRITE)
	}
}

// sealedDevice is the Device made by Sealed.
type sealedDevice struct {
	plain      []byte
	unmapPlain func() error
	// grow is the plaintext's mapping when Map reserved room to grow,
	// nil otherwise; file is the sealed file.
	grow   *mapping
	file   *os.File
	inner  Device
	recs   []byte
	sealer *seal.Sealer
	// keys seal from now on; prev, during a rotation, is the old key.
	keys, prev *seal.Keys
	hdr        seal.Header
	closed     bool
	subs       subscribers

	// The digest of the pool's plaintext as written back (see
	// internal/seal): lineDig holds each line's part, dg computes them.
	dkey    []byte
	dg      *seal.Digester
	lineDig []uint64
	digest  uint64
	// found is the digest record the file had at open; marked is set
	// once this session wrote DigestOpen over it, before its first line
	// (a fence failure then is kept in markErr for the next Fence).
	found   seal.DigestState
	marked  bool
	markErr error
	// pending is set while lines were written back since the last fence.
	pending bool
	// helpers seal the parts of a large flush beside the device's own
	// session, each in a session of its own.
	helpers []sealHelper
}

// SealedFile returns, for a device made by Sealed, the inner device that
// maps the sealed file: its Bytes are the file's, header included, and it
// writes back whole records. ok is false for any other device.
func SealedFile(d Device) (inner Device, ok bool) {
	s, ok := d.(*sealedDevice)
	if !ok {
		return nil, false
	}
	return s.inner, true
}

// SealImage returns a reader of the sealed file that holds the pool image
// plain reads (the pool of d, as of some commit), and the file's size.
// Each read seals the lines it covers in a session of its own, under d's
// key; lines of zeros become blank records, as in a file never written
// there. It is for one goroutine at a time. d must be a device made by
// Sealed.
func SealImage(d Device, plain io.ReaderAt) (io.ReaderAt, int64, error) {
	s, ok := d.(*sealedDevice)
	if !ok {
		return nil, 0, errors.New("pmemgo: SealImage of a device that is not sealed")
	}
	sealer, err := s.keys.NewSealer(s.hdr.UUID)
	if err != nil {
		return nil, 0, err
	}
	size := int64(len(s.plain))
	img := &sealedImage{plain: plain, sealer: sealer, size: seal.FileSize(size), header: make([]byte, seal.HeaderSize)}
	copy(img.header, s.recs[:seal.HeaderSize])
	// The file's header may say more than the pool holds (a growth
	// interrupted by a crash); the image's says what it holds.
	if hdr := s.hdr; hdr.PoolSize != uint64(size) {
		hdr.PoolSize = uint64(size)
		hdr.Rekey(s.keys, s.prev)
		hdr.Encode(img.header)
	}
	// The image holds the plaintext as of now exactly: its digest record
	// says so, whatever this session's own record says.
	sealer.SealDigest(img.header[seal.DigestOff:], seal.DigestState{Kind: seal.DigestExact, Digest: s.digest})
	return img, img.size, nil
}

// sealedImage is the reader SealImage returns.
type sealedImage struct {
	plain  io.ReaderAt
	sealer *seal.Sealer
	size   int64
	header []byte
	buf    []byte
	rec    [seal.RecordSize]byte
}

// ReadAt reads the sealed file's bytes [off, off+len(p)). The plaintext
// of the records it covers is read with one read of plain.
func (s *sealedImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := 0
	if off < seal.HeaderSize {
		n = copy(p, s.header[off:])
	}
	end := min(off+int64(len(p)), s.size)
	if off+int64(n) < end {
		first := (off + int64(n) - seal.HeaderSize) / seal.RecordSize
		last := (end - seal.HeaderSize + seal.RecordSize - 1) / seal.RecordSize
		s.buf = slices.Grow(s.buf[:0], int(last-first)*seal.LineSize)[:int(last-first)*seal.LineSize]
		if _, err := s.plain.ReadAt(s.buf, first*seal.LineSize); err != nil {
			return n, err
		}
		for r := first; r < last; r++ {
			line := s.buf[(r-first)*seal.LineSize:][:seal.LineSize]
			if seal.IsZeroLine(line) {
				clear(s.rec[:])
			} else {
				s.sealer.Seal(s.rec[:], r*seal.LineSize, line)
			}
			recOff := seal.HeaderSize + r*seal.RecordSize
			lo := max(recOff, off+int64(n)) - recOff
			n += copy(p[n:], s.rec[lo:])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Bytes returns the plaintext mapping, or nil once closed.
func (d *sealedDevice) Bytes() []byte { return d.plain }

// Flush seals the lines of [off, off+n) into their records and flushes
// the records through the inner device.
func (d *sealedDevice) Flush(off, n int) {
	if d.closed {
		return
	}
	lo, hi, ok := lineSpan(off, n, len(d.plain))
	if !ok {
		return
	}
	if !d.marked {
		d.mark()
	}
	// A small flush, nearly every one, does not ask for GOMAXPROCS, which
	// takes the scheduler's lock.
	if parts := (hi - lo) / LineSize / parallelSealLines; parts > 1 && runtime.GOMAXPROCS(0) > 1 {
		d.sealParallel(lo, hi, min(parts, runtime.GOMAXPROCS(0)))
	} else {
		d.digest ^= d.sealLines(d.sealer, d.dg, lo, hi)
	}
	d.pending = true
	first := seal.RecordOff(int64(lo))
	d.inner.Flush(int(first), int(seal.RecordOff(int64(hi))-first))
	d.subs.writeBack(lo, hi-lo)
}

// BuffersStores reports true: the plaintext is private memory, and only a
// flush seals a line into the file, so the heap commits with one fence
// (see Buffering).
func (d *sealedDevice) BuffersStores() bool { return true }

// Fence makes the records flushed since the last fence durable.
func (d *sealedDevice) Fence() error {
	if d.closed {
		return ErrClosed
	}
	if d.markErr != nil {
		return d.markErr
	}
	if err := d.inner.Fence(); err != nil {
		return err
	}
	d.pending = false
	d.subs.fence()
	return nil
}

// Subscribe registers s for the write-backs (in plaintext pool offsets)
// and fences from now on.
func (d *sealedDevice) Subscribe(s Subscriber) (cancel func()) {
	return d.subs.add(s)
}

// Close unmaps the plaintext and closes the inner device: what was not
// fenced may be lost, as in a crash. A second Close returns ErrClosed.
func (d *sealedDevice) Close() error {
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	err := d.closeDigest()
	err = errors.Join(err, d.inner.Close())
	d.plain, d.recs = nil, nil
	return errors.Join(err, d.unmapPlain())
}
