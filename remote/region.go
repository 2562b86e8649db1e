package remote

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
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

// openRegion maps the region file of name under dir.
func openRegion(dir, name string, id uint32) (*region, error) {
	f, err := os.OpenFile(regionPath(dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	if size <= 0 || size > MaxRegion || size%PageSize != 0 {
		f.Close()
		return nil, fmt.Errorf("region file %s: size %d is not a multiple of %d up to %d: %w", f.Name(), size, PageSize, int64(MaxRegion), ErrProtocol)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("map region file %s: %w", f.Name(), err)
	}
	r := &region{id: id, dir: dir, name: name, size: uint64(size), f: f, mem: mem}
	if b, err := os.ReadFile(metaPath(dir, name)); err == nil && len(b) == len(r.lastWriter) {
		copy(r.lastWriter[:], b)
	}
	return r, nil
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
	if err := tmp.Truncate(int64(size)); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
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

// read returns n bytes at off, checked against the region's size.
func (r *region) read(off uint64, n uint32) ([]byte, error) {
	if off > r.size || uint64(n) > r.size-off {
		return nil, fmt.Errorf("read [%d, +%d) outside region %s of %d bytes: %w", off, n, r.name, r.size, ErrProtocol)
	}
	return r.mem[off : off+uint64(n)], nil
}

// write applies a batch of runs from c, which must hold the write claim,
// and makes them durable before returning: an acknowledged write-back
// survives a crash of the node.
func (r *region) write(c *srvConn, runs []run) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.claimedBy != c {
		return fmt.Errorf("write to region %s without its write claim: %w", r.name, ErrBusy)
	}
	if err := r.markWriter(); err != nil {
		return err
	}
	for _, w := range runs {
		copy(r.mem[w.off:], w.data)
	}
	for _, pr := range pageRanges(runs) {
		if err := unix.Msync(r.mem[pr[0]:pr[1]], unix.MS_SYNC); err != nil {
			return fmt.Errorf("region %s: msync [%d, %d): %w: %w", r.name, pr[0], pr[1], err, ErrNodeFailed)
		}
	}
	return nil
}

// markWriter makes the claim's writer the region's last writer, durably,
// before its first write-back changes the region. Marking at the claim
// instead would let a client whose open then fails (a wrong key, a
// damaged header) take the mark without writing anything, and the
// rightful writer's backup would no longer count as complete.
func (r *region) markWriter() error {
	if r.lastWriter == r.claimedAs {
		return nil
	}
	if err := writeFileSync(metaPath(r.dir, r.name), r.claimedAs[:]); err != nil {
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
	r.claimedBy, r.claimedAs = c, w
	return nil
}

// release drops c's write claim, if it holds one.
func (r *region) release(c *srvConn) {
	r.mu.Lock()
	if r.claimedBy == c {
		r.claimedBy = nil
	}
	r.mu.Unlock()
}

func (r *region) close() error {
	return errors.Join(unix.Munmap(r.mem), r.f.Close())
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
