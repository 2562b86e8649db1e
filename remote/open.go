// Package remote keeps pools on a memory node: a process that holds named
// regions in memory, each backed by a file, and serves page reads and line
// write-backs over the network. Open maps a remote pool at a local address
// and brings each page in on first touch, so opening a large pool costs
// what is touched, not its size. Commits write their lines to the node,
// durable there before Update returns, and to a local backup file, which
// serves faults when the node does not answer in time.
//
// Page faults are resolved by an agent process (see AgentMain), never by
// the faulting process's own goroutines.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// Scheme is the URL scheme of a remote pool: pmem://HOST:PORT/NAME.
const Scheme = "pmem://"

// Options configures Open.
type Options struct {
	// Backup is the local backup file, required. Every committed line is
	// in it before the commit returns; pages fetched from the node are
	// copied into it.
	Backup string
	// Size creates the pool with this many bytes if the node has no region
	// of the name. Zero means the region must exist.
	Size int64
	// TLS names the client's PEM files; the agent process loads them too.
	TLS TLSFiles
	// Insecure talks plain TCP to the node.
	Insecure bool
	// RemoteTimeout is how long a fetch or a write-back may take before
	// the node is marked suspect and the backup used instead; 0 means
	// 200ms.
	RemoteTimeout time.Duration
	// Readahead is how much a fault fetches: the aligned cluster of this
	// many bytes around the page touched, a power of two times 4 KiB up to
	// 1 MiB. Zero means 16 KiB; PageSize means one page. Pages of the
	// cluster that are already in are not replaced.
	Readahead int64
	// LocalCap bounds the pool's resident memory in bytes: beyond it,
	// clean pages are dropped after a commit and fault back in when
	// touched. Zero means no bound.
	LocalCap int64
	// Agent is the command that runs the fault agent; it is started with
	// PMEMGO_REMOTE_AGENT set in its environment, twice per open (the
	// keeper, then the worker it starts, again whenever one dies), and
	// must call AgentMain. Nil means this program's own executable.
	Agent []string
	// Manager resolves a pool name given to Open instead of a URL; nil
	// allows only URLs.
	Manager Manager
	// Heap holds the heap options (Device is set by Open; Size, ReadOnly
	// and OldKey are not supported here). With Heap.Key the pool is
	// sealed: the node and the backup hold one AEAD record per line (the
	// sealed pool format), and pages are opened as they are fetched.
	Heap heap.Options
}

// ParseURL splits pmem://ADDR/NAME into the node's address and the
// pool's name.
func ParseURL(s string) (addr, name string, err error) {
	if !strings.HasPrefix(s, Scheme) {
		return "", "", fmt.Errorf("remote pool %q: want %sHOST:PORT/NAME: %w", s, Scheme, ErrProtocol)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("remote pool %q: %w", s, err)
	}
	name = strings.TrimPrefix(u.Path, "/")
	if u.Host == "" || u.Port() == "" {
		return "", "", fmt.Errorf("remote pool %q: no HOST:PORT: %w", s, ErrProtocol)
	}
	if err := CheckName(name); err != nil {
		return "", "", fmt.Errorf("remote pool %q: %w", s, err)
	}
	return u.Host, name, nil
}

// IsURL reports whether s names a remote pool.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// session is an open remote pool's connection to its node.
type session struct {
	opts   Options
	addr   string
	name   string
	tls    *tls.Config
	cl     *client
	epoch  uint64
	region uint32
	size   uint64
	side   *sidecar
	// lock holds the backup's lock file (see lockBackup) until the
	// session ends.
	lock *os.File
}

// Open opens the remote pool at rawURL (pmem://ADDR/NAME), or the pool
// of that name placed by opts.Manager, as a heap whose mapping is paged
// in from the node on demand. The node must answer at open.
func Open(rawURL string, opts *Options) (*heap.Heap, error) {
	var placed *Placement
	if !IsURL(rawURL) {
		url, p, err := resolveName(rawURL, opts)
		if err != nil {
			return nil, err
		}
		rawURL, placed = url, &p
	}
	s, err := openSession(rawURL, opts)
	if err != nil {
		return nil, err
	}
	if placed != nil && placed.Size != 0 && s.size != placed.Size {
		s.closeWithin(releaseWait)
		return nil, fmt.Errorf("open %s: the placement records %d bytes, region %s on %s holds %d: %w",
			rawURL, placed.Size, s.name, s.addr, s.size, ErrProtocol)
	}
	hopts := s.opts.Heap
	hopts.Device = &mapper{s: s}
	if hopts.Key != nil {
		// The remote device seals and opens the lines itself, so that
		// pages are opened as they are fetched, not all at open.
		hopts.Device, hopts.Key = &sealedMapper{mapper{s: s}}, nil
	}
	hopts.Size = 0
	h, err := heap.Open(s.opts.Backup, &hopts)
	if err != nil {
		s.closeWithin(releaseWait)
		return nil, fmt.Errorf("open %s: %w", rawURL, err)
	}
	if err := s.markWriter(); err != nil {
		return nil, errors.Join(fmt.Errorf("open %s: %w", rawURL, err), h.Close())
	}
	return h, nil
}

// markWriter makes this session the region's last writer, now that the
// open succeeded, with a write-back of nothing: the node records the
// mark at a claim's first write-back, so that an open that fails takes
// nothing from the rightful writer, but a session whose commits then
// reach only the backup must find the mark its own when it comes back
// to hand them over.
func (s *session) markWriter() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.cl.write(ctx, s.epoch, s.region, nil); err != nil {
		return fmt.Errorf("record this client as the region's writer: %w", err)
	}
	return nil
}

// openSession connects, claims the region (creating it if asked) and
// prepares the backup.
func openSession(rawURL string, opts *Options) (*session, error) {
	return startSession(rawURL, opts, true)
}

// startSession connects and claims the region (creating it if asked);
// with prepare, it readies the backup for a heap to open.
func startSession(rawURL string, opts *Options, prepare bool) (*session, error) {
	if opts == nil || opts.Backup == "" {
		return nil, fmt.Errorf("open %s: Options.Backup names no backup file: %w", rawURL, pmemgo.ErrInvalidOptions)
	}
	if opts.Heap.OldKey != nil {
		return nil, fmt.Errorf("open %s: Options.Heap.OldKey: a remote pool's key is rotated by remote.RotateKey: %w", rawURL, pmemgo.ErrInvalidOptions)
	}
	if opts.Heap.ReadOnly {
		return nil, fmt.Errorf("open %s: read-only remote opens are not supported (read a copy made by Download): %w", rawURL, pmemgo.ErrInvalidOptions)
	}
	addr, name, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	s := &session{opts: *opts, addr: addr, name: name}
	if s.opts.RemoteTimeout <= 0 {
		s.opts.RemoteTimeout = 200 * time.Millisecond
	}
	if s.opts.Readahead == 0 {
		s.opts.Readahead = 4 * PageSize
	}
	if ra := s.opts.Readahead; ra < PageSize || ra > MaxRead || ra&(ra-1) != 0 {
		return nil, fmt.Errorf("open %s: Readahead %d: want a power of two from %d to %d: %w", rawURL, ra, PageSize, MaxRead, pmemgo.ErrInvalidOptions)
	}
	if ra := s.opts.Readahead; opts.Heap.Key != nil && ra > MaxRead/2 {
		return nil, fmt.Errorf("open %s: Readahead %d: a sealed pool's records take twice the pages, want at most %d: %w", rawURL, ra, MaxRead/2, pmemgo.ErrInvalidOptions)
	}
	if !opts.Insecure {
		if s.tls, err = opts.TLS.load(); err != nil {
			return nil, fmt.Errorf("open %s: %w", rawURL, err)
		}
	}
	if s.lock, err = lockBackup(opts.Backup); err != nil {
		return nil, fmt.Errorf("open %s: %w", rawURL, err)
	}
	if s.side, err = loadSidecar(opts.Backup); err != nil {
		s.unlock()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.cl, err = dial(ctx, addr, s.tls); err != nil {
		s.unlock()
		return nil, fmt.Errorf("open %s: %w", rawURL, err)
	}
	if err := s.claim(ctx, prepare); err != nil {
		if s.epoch != 0 {
			// The region was claimed.
			s.closeWithin(releaseWait)
		} else {
			s.cl.close()
			s.unlock()
		}
		return nil, fmt.Errorf("open %s: %w", rawURL, err)
	}
	return s, nil
}

// lockBackup takes the lock that admits one session at a time to a
// backup file: an flock of BACKUP.lock, kept until the session ends. Two
// opens given the same backup (in one process or two) would otherwise
// both rewrite it and its sidecar, the second before anything refused it:
// heap.Open locks the backup itself, but only after the session has
// prepared it. The lock is a file of its own because heap.Open's lock on
// the backup, taken by this same session, would conflict with it.
func lockBackup(backup string) (*os.File, error) {
	f, err := os.OpenFile(backup+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock backup %s: %w", backup, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("backup %s is in use by another open of a remote pool: %w", backup, ErrBusy)
		}
		return nil, fmt.Errorf("lock backup %s: %w", backup, err)
	}
	return f, nil
}

// unlock releases the backup's lock.
func (s *session) unlock() {
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// releaseWait bounds the wait for the node to release the claim of an
// open that failed, or of a key rotation. The node answered a moment
// before; released only once the node sees the connection closed, the
// claim could still hold off an open that follows at once (ErrBusy).
const releaseWait = 5 * time.Second

// claimRetry is how long an open waits for a region's write claim held
// by another connection: the node releases a closed connection's claim
// once it reads the close, which a reopen right after a Close (or after
// the previous process died) can reach first.
const claimRetry = time.Second

// claimWriter claims the region for writing, asking again while another
// connection holds the claim, for claimRetry at most.
func (s *session) claimWriter(ctx context.Context) (regionInfo, uint64, error) {
	deadline := time.Now().Add(claimRetry)
	for {
		r, epoch, err := s.cl.resolve(ctx, s.name, true, s.side.Writer)
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			return r, epoch, err
		}
		select {
		case <-ctx.Done():
			return r, epoch, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// claim resolves the region, creating it if asked, claims it for writing,
// hands the node what an earlier session committed while it was away,
// and with prepare readies the backup.
func (s *session) claim(ctx context.Context, prepare bool) error {
	r, _, err := s.cl.resolve(ctx, s.name, false, WriterID{})
	if errors.Is(err, ErrNotFound) && s.opts.Size > 0 {
		return s.create(ctx)
	}
	if err != nil {
		return err
	}
	same := s.side.Region == s.name
	complete := same && s.side.Complete && r.lastWriter == s.side.Writer
	if len(s.side.Stale) > 0 && !same {
		return fmt.Errorf("backup %s holds commits region %s lacks, not region %s: %w", s.opts.Backup, s.side.Region, s.name, ErrBusy)
	}
	if len(s.side.Stale) > 0 && r.lastWriter != s.side.Writer {
		return fmt.Errorf("backup %s holds commits the node lacks, but another writer wrote region %s since: %w", s.opts.Backup, s.name, ErrBusy)
	}
	if r, s.epoch, err = s.claimWriter(ctx); err != nil {
		return err
	}
	s.region, s.size = r.id, r.size
	if len(s.side.Stale) > 0 {
		if err := s.pushPages(ctx, s.side.Stale); err != nil {
			return fmt.Errorf("resynchronise the node from the backup: %w", err)
		}
		s.side.Stale = nil
		if err := s.side.save(); err != nil {
			return err
		}
	}
	if !prepare {
		return s.adopt(complete)
	}
	return s.prepareBackup(ctx, complete)
}

// adopt records the backup as this region's, holding all of it if
// complete. It is recorded before the backup changes, and only then: an
// open that fails before leaves the backup's state as it was.
func (s *session) adopt(complete bool) error {
	s.side.Complete, s.side.Region = complete, s.name
	return s.side.save()
}

// prepareBackup sizes the backup and copies the node's header pages into
// it, since the heap reads the header from the file before mapping; a
// complete backup keeps its own copy if the node's is damaged. The
// node's pages are checked before the backup changes.
func (s *session) prepareBackup(ctx context.Context, complete bool) error {
	head := make([]byte, min(s.size, 4*PageSize))
	if s.opts.Heap.Key != nil {
		head = make([]byte, min(s.size, recordOff(4*PageSize)))
	}
	err := s.cl.read(ctx, s.epoch, s.region, 0, head, prioDemand)
	if err == nil && s.opts.Heap.Key != nil {
		err = checkSealedHead(s.opts.Heap.Key, head)
	}
	if errors.Is(err, pmemgo.ErrCorrupt) && complete {
		// A complete backup holds the pool's own copy: keep it, and
		// repair the node's with it.
		logger(s.opts.Heap.Logger).Warn("pmemgo remote: the node's copy is damaged; the backup's serves and repairs it",
			"node", s.addr, "region", s.name, "err", err)
		pages := make([]uint64, (len(head)+PageSize-1)/PageSize)
		for i := range pages {
			pages[i] = uint64(i)
		}
		if err := s.pushPages(ctx, pages); err != nil {
			return fmt.Errorf("repair the node's copy from the backup: %w", err)
		}
		return s.adopt(complete)
	}
	if err != nil {
		return fmt.Errorf("memory node %s, region %s: %w", s.addr, s.name, err)
	}
	if err := s.adopt(complete); err != nil {
		return err
	}
	f, err := s.openBackup()
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(head, 0); err != nil {
		return err
	}
	return f.Sync()
}

// create makes the pool in the backup file, then the region on the node
// from it.
func (s *session) create(ctx context.Context) error {
	if _, err := os.Stat(s.opts.Backup); err == nil {
		return fmt.Errorf("region %s does not exist and backup %s does: remove the backup or name the region it belongs to: %w", s.name, s.opts.Backup, ErrExists)
	}
	hopts := s.opts.Heap
	hopts.Size, hopts.Device = s.opts.Size, nil
	h, err := heap.Open(s.opts.Backup, &hopts)
	if err != nil {
		return err
	}
	if err := h.Close(); err != nil {
		return err
	}
	fi, err := os.Stat(s.opts.Backup)
	if err != nil {
		return err
	}
	if _, _, err := s.cl.create(ctx, s.name, uint64(fi.Size())); err != nil {
		return err
	}
	r, epoch, err := s.cl.resolve(ctx, s.name, true, s.side.Writer)
	if err != nil {
		return err
	}
	s.epoch, s.region, s.size = epoch, r.id, r.size
	if err := s.upload(ctx); err != nil {
		return err
	}
	s.side.Complete, s.side.Region = true, s.name
	return s.side.save()
}

// upload sends every non-zero page of the backup to the node.
func (s *session) upload(ctx context.Context) error {
	var pages []uint64
	f, err := os.Open(s.opts.Backup)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, PageSize)
	for p := range s.size / PageSize {
		if _, err := f.ReadAt(buf, int64(p*PageSize)); err != nil {
			return err
		}
		for _, b := range buf {
			if b != 0 {
				pages = append(pages, p)
				break
			}
		}
	}
	return s.pushPages(ctx, pages)
}

// pushPages writes the backup's copy of pages to the node, in batches.
func (s *session) pushPages(ctx context.Context, pages []uint64) error {
	f, err := os.Open(s.opts.Backup)
	if err != nil {
		return err
	}
	defer f.Close()
	const batch = 1024
	for len(pages) > 0 {
		n := min(len(pages), batch)
		runs := make([]run, n)
		for i, p := range pages[:n] {
			if p >= s.size/PageSize {
				return fmt.Errorf("page %d outside the region of %d bytes: %w", p, s.size, ErrProtocol)
			}
			runs[i] = run{off: p * PageSize, data: make([]byte, PageSize)}
			if _, err := f.ReadAt(runs[i].data, int64(p*PageSize)); err != nil {
				return err
			}
		}
		if err := s.cl.write(ctx, s.epoch, s.region, runs); err != nil {
			return err
		}
		pages = pages[n:]
	}
	return nil
}

// answers reports whether the node answers a request within ctx, on the
// session's connection if it is alive, else on a new one.
func (s *session) answers(ctx context.Context) bool {
	cl := s.cl
	select {
	case <-cl.done:
		var err error
		if cl, err = dial(ctx, s.addr, s.tls); err != nil {
			return false
		}
		defer cl.close()
	default:
	}
	_, _, err := cl.resolve(ctx, s.name, false, WriterID{})
	return err == nil
}

// reconnect replaces a failed connection and claims the region again.
func (s *session) reconnect(ctx context.Context) error {
	select {
	case <-s.cl.done:
	default:
		r, epoch, err := s.cl.resolve(ctx, s.name, true, s.side.Writer)
		if err != nil {
			return err
		}
		s.epoch, s.region = epoch, r.id
		return nil
	}
	cl, err := dial(ctx, s.addr, s.tls)
	if err != nil {
		return err
	}
	r, epoch, err := cl.resolve(ctx, s.name, true, s.side.Writer)
	if err != nil {
		cl.close()
		return err
	}
	s.cl.close()
	s.cl, s.epoch, s.region = cl, epoch, r.id
	return nil
}

// logger returns l, or the default logger if l is nil.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

// close releases the claim and the connection.
func (s *session) close() { s.closeWithin(s.opts.RemoteTimeout) }

// closeWithin releases the claim, waiting at most d for the node to
// answer (else the node releases it once it sees the connection closed),
// and closes the connection.
func (s *session) closeWithin(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_ = s.cl.release(ctx, s.epoch, s.region)
	s.cl.close()
	s.unlock()
}

// openBackup opens the backup file, creating it, at the region's size.
func (s *session) openBackup() (*os.File, error) {
	f, err := os.OpenFile(s.opts.Backup, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(int64(s.size)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
