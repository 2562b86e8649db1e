package remote

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/fsx"
)

// A region's checksum file (NAME.sums beside NAME.region) holds one
// checksum per 4 KiB page of the region, so that the node notices a page
// that rotted without knowing what the page means (a sealed region's
// key stays with its clients). Layout, little-endian:
//
//	[0, 8)     magic
//	[8, 16)    pages in the region
//	[16, 24)   xxhash of [0, 16)
//	[24, 28)   intent: the number of page ranges of the write-back in flight
//	[32, 40)   xxhash of [24, 28) and the ranges
//	[40, ...)  the ranges, [first, end) page indexes, two uint64 each
//	[4096, ...) one uint64 per page: xxhash(page) ^ xxhash(zero page)
//
// A zero page's checksum is 0, so that a new region's file is sparse.
// A write-back records its pages as the intent, durably, before it
// changes them, and syncs their new checksums with them: after a crash,
// the pages of the intent may hold any mix of old and new lines, which
// is a state a crash may leave (the write-back was not acknowledged, and
// its client hands the pages over again), so their checksums are taken
// from their bytes at start instead of being checked.
const (
	sumsMagic  = "PMGSUMS1"
	sumsHeader = PageSize
	intentOff  = 24
	rangesOff  = 40
	maxIntent  = (sumsHeader - rangesOff) / 16
)

var zeroPageSum = xxhash.Sum64(make([]byte, PageSize))

// pageSum is the checksum kept for page p.
func pageSum(p []byte) uint64 { return xxhash.Sum64(p) ^ zeroPageSum }

func sumsPath(dir, name string) string { return filepath.Join(dir, name+".sums") }

// sums is a region's checksum file, mapped shared.
type sums struct {
	f     *os.File
	mem   []byte
	pages uint64
}

// createSums writes a new checksum file for a region of pages pages,
// with the checksums of the bytes of from if it is not nil (a region kept
// before checksums were), else of zero pages, under a temporary name
// renamed into place when complete.
func createSums(dir, name string, pages uint64, from *os.File) error {
	tmp, err := os.CreateTemp(dir, "."+name+".sums-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	hdr := make([]byte, sumsHeader)
	copy(hdr, sumsMagic)
	le.PutUint64(hdr[8:], pages)
	le.PutUint64(hdr[16:], xxhash.Sum64(hdr[:16]))
	le.PutUint64(hdr[32:], xxhash.Sum64(hdr[intentOff:intentOff+4]))
	if _, err := tmp.WriteAt(hdr, 0); err != nil {
		return err
	}
	if err := fsx.Allocate(tmp, sumsHeader+8*int64(pages)); err != nil {
		return err
	}
	if from != nil {
		err := forEachPage(from, 0, pages, func(p uint64, page []byte) error {
			if page == nil {
				return nil
			}
			var b [8]byte
			le.PutUint64(b[:], pageSum(page))
			_, err := tmp.WriteAt(b[:], sumsHeader+8*int64(p))
			return err
		})
		if err != nil {
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), sumsPath(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// openSums maps the checksum file of region name, which has pages pages.
func openSums(dir, name string, pages uint64, flag int) (*sums, error) {
	f, err := os.OpenFile(sumsPath(dir, name), flag, 0)
	if err != nil {
		return nil, err
	}
	s, err := mapSums(f, pages, flag)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("checksum file %s: %w", f.Name(), err)
	}
	return s, nil
}

func mapSums(f *os.File, pages uint64, flag int) (*sums, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if want := sumsHeader + 8*int64(pages); fi.Size() != want {
		return nil, fmt.Errorf("%d bytes, want %d for %d pages: %w", fi.Size(), want, pages, pmemgo.ErrCorrupt)
	}
	prot := unix.PROT_READ
	if flag&os.O_RDWR != 0 {
		prot |= unix.PROT_WRITE
		// Checksums are stored through the mapping: a file made by an
		// earlier release may have holes.
		if err := fsx.Allocate(f, fi.Size()); err != nil {
			return nil, err
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	switch {
	case string(mem[:8]) != sumsMagic:
		err = fmt.Errorf("bad magic %q: %w", mem[:8], pmemgo.ErrCorrupt)
	case le.Uint64(mem[16:]) != xxhash.Sum64(mem[:16]):
		err = fmt.Errorf("header checksum mismatch: %w", pmemgo.ErrCorrupt)
	case le.Uint64(mem[8:]) != pages:
		err = fmt.Errorf("made for %d pages, the region has %d: %w", le.Uint64(mem[8:]), pages, pmemgo.ErrCorrupt)
	}
	if err != nil {
		_ = unix.Munmap(mem)
		return nil, err
	}
	return &sums{f: f, mem: mem, pages: pages}, nil
}

func (s *sums) get(p uint64) uint64    { return le.Uint64(s.mem[sumsHeader+8*p:]) }
func (s *sums) set(p uint64, v uint64) { le.PutUint64(s.mem[sumsHeader+8*p:], v) }

// intent returns the page ranges of the write-back in flight when the
// file was last left, or nil if none was or the record is torn (then the
// write-back had not begun changing pages).
func (s *sums) intent() [][2]uint64 {
	n := uint64(le.Uint32(s.mem[intentOff:]))
	if n > maxIntent || le.Uint64(s.mem[32:]) != s.intentSum(n) {
		return nil
	}
	out := make([][2]uint64, n)
	for i := range out {
		at := rangesOff + 16*i
		out[i] = [2]uint64{le.Uint64(s.mem[at:]), min(le.Uint64(s.mem[at+8:]), s.pages)}
	}
	return out
}

func (s *sums) intentSum(n uint64) uint64 {
	d := xxhash.New()
	_, _ = d.Write(s.mem[intentOff : intentOff+4])
	_, _ = d.Write(s.mem[rangesOff : rangesOff+16*n])
	return d.Sum64()
}

// record makes pages, ranges of page indexes, the write-back in flight,
// with vals as their checksums in order, durably, with one msync. Too
// many ranges are recorded as the one that spans them.
func (s *sums) record(pages [][2]uint64, vals []uint64) error {
	i := 0
	for _, pr := range pages {
		for p := pr[0]; p < pr[1]; p++ {
			s.set(p, vals[i])
			i++
		}
	}
	s.setIntent(pages)
	hi := uint64(sumsHeader)
	if len(pages) > 0 {
		hi += 8 * pages[len(pages)-1][1]
	}
	return unix.Msync(s.mem[:hi], unix.MS_SYNC)
}

func (s *sums) setIntent(pages [][2]uint64) {
	if len(pages) > maxIntent {
		pages = [][2]uint64{{pages[0][0], pages[len(pages)-1][1]}}
	}
	le.PutUint32(s.mem[intentOff:], uint32(len(pages)))
	for i, pr := range pages {
		le.PutUint64(s.mem[rangesOff+16*i:], pr[0])
		le.PutUint64(s.mem[rangesOff+16*i+8:], pr[1])
	}
	le.PutUint64(s.mem[32:], s.intentSum(uint64(len(pages))))
}

// settle takes the checksums of the pages of the write-back in flight at
// the last stop from their bytes mem (see the file's layout above) and
// clears the intent.
func (s *sums) settle(mem []byte) error {
	in := s.intent()
	for _, pr := range in {
		for p := pr[0]; p < pr[1]; p++ {
			s.set(p, pageSum(mem[p*PageSize:(p+1)*PageSize]))
		}
	}
	return s.clear(in)
}

// clear records that no write-back is in flight, durably, with the
// checksums of pages, the last one's pages.
func (s *sums) clear(pages [][2]uint64) error {
	s.setIntent(nil)
	hi := uint64(sumsHeader)
	if len(pages) > 0 {
		hi += 8 * pages[len(pages)-1][1]
	}
	return unix.Msync(s.mem[:hi], unix.MS_SYNC)
}

func (s *sums) close() error {
	return errors.Join(unix.Munmap(s.mem), s.f.Close())
}

// pageRangesOf returns the page index ranges of byte ranges brs, which
// start page-aligned.
func pageRangesOf(brs [][2]uint64) [][2]uint64 {
	out := make([][2]uint64, len(brs))
	for i, br := range brs {
		out[i] = [2]uint64{br[0] / PageSize, (br[1] + PageSize - 1) / PageSize}
	}
	return out
}

// forEachPage reads the pages [first, end) of f with pread and calls fn
// with each, skipping the data of the holes of a sparse file: fn gets a
// nil page for them (a zero page, whose checksum is 0). Reading with
// pread rather than through a mapping spares a page fault per page.
func forEachPage(f *os.File, first, end uint64, fn func(p uint64, page []byte) error) error {
	const chunk = 256
	buf := make([]byte, chunk*PageSize)
	holes := func(to uint64) error {
		for ; first < to; first++ {
			if err := fn(first, nil); err != nil {
				return err
			}
		}
		return nil
	}
	for first < end {
		data, err := unix.Seek(int(f.Fd()), int64(first*PageSize), unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return holes(end)
		}
		if err == nil && uint64(data)/PageSize > first {
			if err := holes(min(uint64(data)/PageSize, end)); err != nil {
				return err
			}
			continue
		}
		n := min(end-first, chunk)
		b := buf[:n*PageSize]
		if _, err := f.ReadAt(b, int64(first*PageSize)); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for i := range n {
			if err := fn(first+i, b[i*PageSize:(i+1)*PageSize]); err != nil {
				return err
			}
		}
		first += n
	}
	return nil
}
