package remote

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/fsx"
)

// region is a named region a node holds: its file mapped shared, so that
// reads are served from memory and write-backs reach the file.
type region struct {
	id   uint32
	dir  string
	name string
	size uint64
	f    *os.File
	mem  []byte
	sums *sums

	// mu orders write-backs and the write claim.
	mu        sync.Mutex
	claimedBy *srvConn
	// claimedAs is the writer identity the claim was made with; it
	// becomes the last writer at the claim's first write-back.
	claimedAs  WriterID
	lastWriter WriterID
}

func regionPath(dir, name string) string { return filepath.Join(dir, name+".region") }
func metaPath(dir, name string) string   { return filepath.Join(dir, name+".writer") }

// openRegion maps the region file of name under dir with its checksum
// file, which is made from the region's bytes if there is none (a region
// kept before checksums were). It returns, as problems, what it found
// damaged that does not stop the region from being served.
func openRegion(dir, name string, id uint32) (*region, []Problem, error) {
	f, err := os.OpenFile(regionPath(dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	size, err := regionFileSize(f)
	if err == nil {
		// A region made by an earlier release may have holes.
		err = fsx.Allocate(f, size)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("map region file %s: %w", f.Name(), err)
	}
	r := &region{id: id, dir: dir, name: name, size: uint64(size), f: f, mem: mem}
	if err := r.openSums(); err != nil {
		_ = unix.Munmap(mem)
		f.Close()
		return nil, nil, err
	}
	var problems []Problem
	r.lastWriter, err = readWriterFile(metaPath(dir, name))
	if err != nil {
		problems = append(problems, writerProblem(name, err))
	}
	return r, problems, nil
}

// populate maps every page of the region, when budget (the bytes the node
// may still map this way, see Node.populate) holds its size. A node holds
// its regions in memory: mapping them all in one call costs a fraction of
// what faulting each in on its first read costs (12 us a page on a
// virtual machine with shadow page tables, against 2), and the start's
// check reads every page anyway. A region the budget does not hold is
// left to fault in as read, since on tmpfs mapping a page allocates it;
// so is every region on a kernel without MADV_POPULATE_READ (Linux 5.14).
func (r *region) populate(budget *atomic.Int64) {
	for {
		left := budget.Load()
		if int64(r.size) > left {
			return
		}
		if budget.CompareAndSwap(left, left-int64(r.size)) {
			break
		}
	}
	_ = unix.Madvise(r.mem, unix.MADV_POPULATE_READ)
}

// regionFileSize returns the size of region file f, checked.
func regionFileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if size <= 0 || size > MaxRegion || size%PageSize != 0 {
		return 0, fmt.Errorf("region file %s: size %d is not a multiple of %d up to %d: %w", f.Name(), size, PageSize, int64(MaxRegion), pmemgo.ErrCorrupt)
	}
	return size, nil
}

// openSums opens the region's checksum file, making it if there is none,
// and settles the write-back a crash interrupted.
func (r *region) openSums() error {
	pages := r.size / PageSize
	if _, err := os.Stat(sumsPath(r.dir, r.name)); errors.Is(err, os.ErrNotExist) {
		if err := createSums(r.dir, r.name, pages, r.f); err != nil {
			return fmt.Errorf("make the checksum file of region %s: %w", r.name, err)
		}
	}
	s, err := openSums(r.dir, r.name, pages, os.O_RDWR)
	if err != nil {
		return err
	}
	if err := s.settle(r.mem); err != nil {
		s.close()
		return fmt.Errorf("checksum file of region %s: %w", r.name, err)
	}
	r.sums = s
	return nil
}

// writerProblem reports a writer file that cannot be read.
func writerProblem(name string, err error) Problem {
	return Problem{Region: name, Offset: -1, Err: err.Error() +
		"; no client's backup counts as complete until the region is written again"}
}

// readWriterFile reads a region's last writer: 16 bytes and their xxhash,
// or the 16 bytes alone as nodes wrote them before. No file means no
// writer yet.
func readWriterFile(path string) (WriterID, error) {
	var w WriterID
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return w, nil
	case err != nil:
		return w, err
	case len(b) == len(w):
	case len(b) == len(w)+8 && le.Uint64(b[len(w):]) == xxhash.Sum64(b[:len(w)]):
	default:
		return w, fmt.Errorf("writer file %s: %d bytes that do not check: %w", path, len(b), pmemgo.ErrCorrupt)
	}
	copy(w[:], b)
	return w, nil
}

// createRegionFile makes the file of a new region, zero-filled and
// durable, under a temporary name renamed into place when complete.
func createRegionFile(dir, name string, size uint64) error {
	path := regionPath(dir, name)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("region %s: %w", name, ErrExists)
	}
	tmp, err := os.CreateTemp(dir, "."+name+".creating-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// The region's pages are reserved now: the node writes them through a
	// shared mapping, where a page the file system has no room for would
	// be a SIGBUS.
	if err := fsx.Allocate(tmp, int64(size)); err != nil {
		return fmt.Errorf("region %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	// The checksums first: a region found without them would have them
	// made from its bytes, unchecked.
	if err := createSums(dir, name, size/PageSize, nil); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// read returns n bytes at off, checked against the region's size and
// the checksums of the pages they lie in. A page that does not match its
// checksum is an error wrapping pmemgo.ErrCorrupt that names the region
// and the page's offset: it is never served.
func (r *region) read(off uint64, n uint32) ([]byte, error) {
	if off > r.size || uint64(n) > r.size-off {
		return nil, fmt.Errorf("read [%d, +%d) outside region %s of %d bytes: %w", off, n, r.name, r.size, ErrProtocol)
	}
	err := fsx.CatchFault(nil, func() error {
		for p := off / PageSize; p*PageSize < off+uint64(n); p++ {
			if err := r.checkPage(p); err != nil {
				return err
			}
		}
		return nil
	})
	if fe := (*fsx.FaultError)(nil); errors.As(err, &fe) {
		err = fmt.Errorf("region %s: read [%d, +%d): %w: %w", r.name, off, n, err, ErrNodeFailed)
	}
	if err != nil {
		return nil, err
	}
	return r.mem[off : off+uint64(n)], nil
}

// checkPage compares page p with its checksum. Reads do not wait for
// write-backs, so a page may be met between its bytes and its checksum:
// a mismatch is checked again under the lock, with no write-back in
// progress, before the page is called damaged.
func (r *region) checkPage(p uint64) error {
	if pageSum(r.mem[p*PageSize:(p+1)*PageSize]) == r.sums.get(p) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if pageSum(r.mem[p*PageSize:(p+1)*PageSize]) == r.sums.get(p) {
		return nil
	}
	return fmt.Errorf("region %s: the page at offset %d does not match its checksum: %w", r.name, p*PageSize, pmemgo.ErrCorrupt)
}

// write applies a batch of runs from c, which must hold the write claim,
// and makes them durable, with their pages' checksums, before returning:
// an acknowledged write-back survives a crash of the node.
func (r *region) write(c *srvConn, runs []run) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claimedBy != c {
		return fmt.Errorf("write to region %s without its write claim: %w", r.name, ErrBusy)
	}
	if err := r.markWriter(); err != nil {
		return err
	}
	ranges := pageRanges(runs)
	if len(ranges) == 0 {
		return nil
	}
	pages := pageRangesOf(ranges)
	err := fsx.CatchFault(nil, func() error {
		if err := r.sums.record(pages, r.newSums(runs, ranges)); err != nil {
			return fmt.Errorf("record the write-back in its checksum file: %w", err)
		}
		for _, w := range runs {
			copy(r.mem[w.off:], w.data)
		}
		return nil
	})
	if err != nil {
		// A fault here means a file shrank under the node, or a page could
		// not be read in: the write-back fails, the node goes on.
		return fmt.Errorf("region %s: %w: %w", r.name, err, ErrNodeFailed)
	}
	// One msync over the span: it writes only the dirty pages in it, and
	// on a file system that flushes its device at each msync, one flush
	// instead of one per range.
	lo, hi := ranges[0][0], ranges[len(ranges)-1][1]
	if err := unix.Msync(r.mem[lo:hi], unix.MS_SYNC); err != nil {
		return fmt.Errorf("region %s: msync [%d, %d): %w: %w", r.name, lo, hi, err, ErrNodeFailed)
	}
	return nil
}

// newSums returns the checksums that the pages of ranges (sorted, merged,
// page-aligned byte ranges covering runs) will have once runs are
// applied to r.mem, in order, computed on a copy: the checksums must be
// durable before the pages change (see sums). r.mu is held.
func (r *region) newSums(runs []run, ranges [][2]uint64) []uint64 {
	starts := make([]uint64, len(ranges)+1)
	for i, br := range ranges {
		starts[i+1] = starts[i] + (br[1]+PageSize-1)&^(PageSize-1) - br[0]
	}
	var buf []byte
	if n := starts[len(ranges)]; n <= scratchSize {
		p := scratch.Get().(*[scratchSize]byte)
		defer scratch.Put(p)
		buf = p[:n]
	} else {
		buf = make([]byte, n)
	}
	for i, br := range ranges {
		copy(buf[starts[i]:starts[i+1]], r.mem[br[0]:])
	}
	for _, w := range runs {
		if len(w.data) == 0 {
			continue
		}
		i := sort.Search(len(ranges), func(i int) bool { return ranges[i][1] > w.off })
		copy(buf[starts[i]+w.off-ranges[i][0]:], w.data)
	}
	out := make([]uint64, 0, len(buf)/PageSize)
	for p := 0; p < len(buf); p += PageSize {
		out = append(out, pageSum(buf[p:p+PageSize]))
	}
	return out
}

// scratchSize is the size of the buffers newSums shares between regions:
// a write-back of up to 16 pages, most of them, needs no allocation.
const scratchSize = 16 * PageSize

var scratch = sync.Pool{New: func() any { return new([scratchSize]byte) }}

// markWriter makes the claim's writer the region's last writer, durably,
// before its first write-back changes the region. Marking at the claim
// instead would let a client whose open then fails (a wrong key, a
// damaged header) take the mark without writing anything, and the
// rightful writer's backup would no longer count as complete.
func (r *region) markWriter() error {
	if r.lastWriter == r.claimedAs {
		return nil
	}
	b := le.AppendUint64(append([]byte(nil), r.claimedAs[:]...), xxhash.Sum64(r.claimedAs[:]))
	if err := writeFileSync(metaPath(r.dir, r.name), b); err != nil {
		return fmt.Errorf("region %s: record its writer: %w: %w", r.name, err, ErrNodeFailed)
	}
	r.lastWriter = r.claimedAs
	return nil
}

// pageRanges returns the page-aligned ranges runs touch, sorted and
// merged, so that each page is synced once.
func pageRanges(runs []run) [][2]uint64 {
	var out [][2]uint64
	for _, w := range runs {
		if len(w.data) > 0 {
			out = append(out, [2]uint64{w.off &^ (PageSize - 1), w.off + uint64(len(w.data))})
		}
	}
	slices.SortFunc(out, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	merged := out[:0]
	for _, pr := range out {
		if k := len(merged); k > 0 && pr[0] <= merged[k-1][1] {
			merged[k-1][1] = max(merged[k-1][1], pr[1])
			continue
		}
		merged = append(merged, pr)
	}
	return merged
}

// claim makes c the region's only writer, as w. The region's last
// writer becomes w at c's first write-back (see markWriter), so that a
// client can tell whether anyone else wrote the region since it last did.
func (r *region) claim(c *srvConn, w WriterID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claimedBy != nil && r.claimedBy != c {
		return fmt.Errorf("region %s: %w", r.name, ErrBusy)
	}
	if r.claimedBy == nil {
		c.claims.Add(1)
	}
	r.claimedBy, r.claimedAs = c, w
	return nil
}

// release drops c's write claim, if it holds one.
func (r *region) release(c *srvConn) {
	r.mu.Lock()
	if r.claimedBy == c {
		r.claimedBy = nil
		c.claims.Add(-1)
	}
	r.mu.Unlock()
}

// close clears the checksum file's intent, so that a clean stop leaves
// every page checked at the next start, and unmaps the region.
func (r *region) close() error {
	return errors.Join(r.sums.clear(nil), r.sums.close(), unix.Munmap(r.mem), r.f.Close())
}

// writeFileSync replaces path with b durably.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
