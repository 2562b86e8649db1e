package remote

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// NodeOptions configures a memory node.
type NodeOptions struct {
	// Dir holds one file per region; the node loads them at start.
	Dir string
	// TLS is the server configuration: TLS 1.3 with client certificates
	// verified against ClientCAs is enforced. Nil requires Insecure.
	TLS *tls.Config
	// Insecure serves plain TCP: anyone who can connect reads and writes
	// every region.
	Insecure bool
	// Workers serve the queues; 0 means 4.
	Workers int
	// FIFO serves requests in arrival order from one queue instead of
	// demand reads first, and write-backs concurrently: only for
	// comparison in benchmarks.
	FIFO bool
	// StarveBound is how many demand reads in a row may pass a waiting
	// write-back; 0 means 8.
	StarveBound int
	// Policy, if set, says which client identities (the common name of a
	// TLS client certificate) may read and write which regions, and so
	// who may read the node's status and scrub it: one that may read
	// every region ("*"). Nil
	// lets every client the CA vouches for do anything. It needs TLS.
	Policy *Policy
	// MaxRegions bounds the regions clients may create; 0 means 4096.
	MaxRegions int
	// MaxBytes bounds the total size of the regions the node holds,
	// those set aside at start included; 0 means what its file system
	// has room for. Either way a region's pages are reserved on the file
	// system when it is created, so that a full disk refuses the create
	// (ErrNodeFull) rather than failing a write-back later.
	MaxBytes int64
	// IdleTimeout closes a connection that holds no write claim, has no
	// request being served and sent nothing for this long, so that a
	// client gone silent gives its connection slot back (the node serves
	// 1024 at once). A claim's connection is never closed for idling: an
	// open pool may go hours without a commit. Clients reconnect when the
	// node closed an idle connection. 0 means 5 minutes; negative, never.
	IdleTimeout time.Duration
	// Logger, if set, is told of connections that fail.
	Logger *slog.Logger
}

// Policy maps client identities to the regions they may use. A name
// "*" stands for every region. Writers may also read, and create the
// regions they may write.
type Policy struct {
	Readers, Writers map[string][]string
}

// allows reports whether identity may read, or write, region name.
func (p *Policy) allows(identity, name string, write bool) bool {
	if p == nil {
		return true
	}
	lists := [][]string{p.Writers[identity]}
	if !write {
		lists = append(lists, p.Readers[identity])
	}
	for _, l := range lists {
		for _, n := range l {
			if n == "*" || n == name {
				return true
			}
		}
	}
	return false
}

// perConnQueued bounds the requests of one connection waiting in the
// queues, so that one client cannot fill the node's memory.
const perConnQueued = 64

// handshakeTimeout bounds a client's TLS handshake.
const handshakeTimeout = 10 * time.Second

// maxConns bounds the connections a node serves at once.
const maxConns = 1024

// Node is a memory node: it holds named regions in memory, each backed by
// a file, and serves page reads and line write-backs.
type Node struct {
	opts  NodeOptions
	epoch uint64
	q     *queues

	mu      sync.Mutex
	regions map[string]*region
	byID    []*region
	// aside holds the regions that failed to open at start, with why;
	// asideBytes is the size of their files.
	aside      map[string]error
	asideBytes uint64
	// problems is the damage found at start.
	problems []Problem
	conns    map[*srvConn]struct{}
	ls       []net.Listener
	closed   bool
	wg       sync.WaitGroup

	reads, writes, bytesRead, bytesWritten, damaged atomic.Uint64
	// populate is how many bytes of regions the node may still map in
	// ahead of their reads: half the memory free at start, taken once,
	// so that clients creating regions cannot make it map more than that
	// however many regions they create (see region.populate).
	populate atomic.Int64
}

// NewNode loads the regions under opts.Dir and starts the workers.
func NewNode(opts NodeOptions) (*Node, error) {
	switch {
	case opts.Dir == "":
		return nil, errors.New("memory node: no directory")
	case opts.TLS != nil && opts.Insecure:
		return nil, errors.New("memory node: both TLS and Insecure set")
	case opts.TLS == nil && !opts.Insecure:
		return nil, errors.New("memory node: no TLS configuration (set Insecure for plain TCP)")
	case opts.Policy != nil && opts.TLS == nil:
		return nil, errors.New("memory node: a policy needs TLS, which identifies clients")
	}
	if opts.TLS != nil {
		if len(opts.TLS.Certificates) == 0 && opts.TLS.GetCertificate == nil {
			return nil, errors.New("memory node: TLS configuration has no certificate")
		}
		if opts.TLS.ClientCAs == nil {
			return nil, errors.New("memory node: TLS configuration has no ClientCAs to verify clients with")
		}
		opts.TLS = opts.TLS.Clone()
		opts.TLS.MinVersion = tls.VersionTLS13
		opts.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.StarveBound <= 0 {
		opts.StarveBound = 8
	}
	if opts.MaxRegions <= 0 {
		opts.MaxRegions = 4096
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var e [8]byte
	if _, err := rand.Read(e[:]); err != nil {
		return nil, err
	}
	n := &Node{
		opts: opts, epoch: binary.LittleEndian.Uint64(e[:]) | 1, q: newQueues(opts.FIFO, opts.StarveBound),
		regions: map[string]*region{}, conns: map[*srvConn]struct{}{}, aside: map[string]error{},
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		n.populate.Store(int64(uint64(si.Freeram) * uint64(si.Unit) / 2))
	}
	if err := n.load(); err != nil {
		n.closeRegions()
		return nil, err
	}
	for range opts.Workers {
		n.wg.Add(1)
		go n.work()
	}
	return n, nil
}

// load opens every region file under the directory and checks every
// page against its checksum. A region that fails to open is set aside,
// and reported, while the others are served; damaged pages are reported,
// and refused when read.
func (n *Node) load() error {
	if err := os.MkdirAll(n.opts.Dir, 0o700); err != nil {
		return err
	}
	paths, err := filepath.Glob(filepath.Join(n.opts.Dir, "*.region"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	report := func(p Problem) {
		n.opts.Logger.Error("memory node: damage found at start", "region", p.Region, "offset", p.Offset, "problem", p.Err)
		n.problems = append(n.problems, p)
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".region")
		if CheckName(name) != nil {
			continue
		}
		r, problems, err := openRegion(n.opts.Dir, name, uint32(len(n.byID)))
		if err == nil {
			for _, p := range problems {
				report(p)
			}
			r.populate(&n.populate)
			if err = r.check(report); err != nil {
				err = errors.Join(fmt.Errorf("check: %w", err), r.close())
			}
		}
		if err != nil {
			n.aside[name] = err
			report(Problem{Region: name, Offset: -1, Err: "set aside: " + err.Error()})
			// Its file still takes its room, which MaxBytes counts.
			if fi, serr := os.Stat(p); serr == nil {
				n.asideBytes += uint64(fi.Size())
			}
			continue
		}
		n.regions[name] = r
		n.byID = append(n.byID, r)
	}
	return nil
}

// Serve accepts connections on l until l is closed or the node is.
// Failures to accept (out of descriptors, say) are logged and retried.
func (n *Node) Serve(l net.Listener) error {
	l = keepAliveListener{l}
	if n.opts.TLS != nil {
		l = tls.NewListener(l, n.opts.TLS)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return net.ErrClosed
	}
	n.ls = append(n.ls, l)
	n.mu.Unlock()
	var wait time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || n.isClosed() {
				return err
			}
			// Out of descriptors (EMFILE, ENFILE), memory or buffers, or a
			// connection aborted before it was accepted: none is a reason
			// to stop serving. Waiting lets connections end and free what
			// ran out.
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			n.opts.Logger.Warn("memory node: accept failed; retrying", "err", err, "wait", wait)
			time.Sleep(wait)
			continue
		}
		wait = 0
		n.mu.Lock()
		if n.closed || len(n.conns) >= maxConns {
			n.mu.Unlock()
			c.Close()
			continue
		}
		sc := &srvConn{n: n, c: c, bw: bufio.NewWriterSize(c, 64<<10), slots: make(chan struct{}, perConnQueued)}
		n.conns[sc] = struct{}{}
		n.wg.Add(1)
		n.mu.Unlock()
		go sc.serve()
	}
}

// isClosed reports whether Close was called.
func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// Dead peers. A client whose machine loses power or whose network is cut
// closes nothing: its connection, and the write claim it holds, would
// stay until TCP gave up on it (about 2.5 minutes of keep-alive probes
// with Go's defaults when the connection was idle, and some 15 minutes of
// retransmissions when a reply was in flight), and a standby opening the
// pool meanwhile is refused with ErrBusy. The node probes an idle
// connection after keepAliveIdle, every keepAliveInterval, and drops a
// connection that acknowledged nothing for deadPeerTimeout (TCP's user
// timeout, which bounds probes and retransmissions alike). A live
// client's kernel answers the probes, however idle the client.
const (
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	deadPeerTimeout   = 11 * time.Second
)

// keepAliveListener sets the node's dead-peer detection on each TCP
// connection it accepts.
type keepAliveListener struct{ net.Listener }

func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval,
			Count: int(deadPeerTimeout / keepAliveInterval)})
		if rc, err := tc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(deadPeerTimeout/time.Millisecond))
			})
		}
	}
	return c, err
}

// Epoch returns the node's incarnation: it changes at every start.
func (n *Node) Epoch() uint64 { return n.epoch }

// Close stops serving, waits for the requests in progress and unmaps the
// regions. Acknowledged write-backs are already durable.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return net.ErrClosed
	}
	n.closed = true
	for _, l := range n.ls {
		l.Close()
	}
	for c := range n.conns {
		c.c.Close()
	}
	n.mu.Unlock()
	n.q.close()
	n.wg.Wait()
	return n.closeRegions()
}

func (n *Node) closeRegions() error {
	var errs []error
	for _, r := range n.byID {
		errs = append(errs, r.close())
	}
	return errors.Join(errs...)
}

// lookup returns the region of id, checking the epoch the client holds.
func (n *Node) lookup(epoch uint64, id uint32) (*region, error) {
	if epoch != n.epoch {
		return nil, fmt.Errorf("region %d of node incarnation %#x, this is %#x: %w", id, epoch, n.epoch, ErrStale)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if int(id) >= len(n.byID) {
		return nil, fmt.Errorf("region %d: %w", id, ErrNotFound)
	}
	return n.byID[id], nil
}

// create makes a new region and maps its pages, with the node's lock
// released: other clients' requests do not wait for it.
func (n *Node) create(c createReq) (*region, error) {
	r, err := n.createLocked(c)
	if err == nil {
		r.populate(&n.populate)
	}
	return r, err
}

func (n *Node) createLocked(c createReq) (*region, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.regions[c.name]; ok {
		return nil, fmt.Errorf("region %s: %w", c.name, ErrExists)
	}
	if len(n.byID) >= n.opts.MaxRegions {
		return nil, fmt.Errorf("create region %s: the node holds %d regions, its limit: %w", c.name, len(n.byID), ErrNodeFull)
	}
	if held := n.heldBytes(); n.opts.MaxBytes > 0 && c.size > uint64(n.opts.MaxBytes)-min(held, uint64(n.opts.MaxBytes)) {
		return nil, fmt.Errorf("create region %s of %d bytes: the node holds %d bytes of regions, its limit is %d: %w", c.name, c.size, held, n.opts.MaxBytes, ErrNodeFull)
	}
	if err := createRegionFile(n.opts.Dir, c.name, c.size); err != nil {
		if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
			err = fmt.Errorf("%w: %w", err, ErrNodeFull)
		}
		return nil, err
	}
	r, _, err := openRegion(n.opts.Dir, c.name, uint32(len(n.byID)))
	if err != nil {
		return nil, err
	}
	n.regions[c.name] = r
	n.byID = append(n.byID, r)
	return r, nil
}

// heldBytes returns the total size of the node's regions, those set
// aside at start included. n.mu is held.
func (n *Node) heldBytes() uint64 {
	held := n.asideBytes
	for _, r := range n.byID {
		held += r.size
	}
	return held
}

func (n *Node) byName(name string) (*region, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.regions[name]
	if err := n.aside[name]; err != nil {
		return nil, fmt.Errorf("region %s was set aside at start (%v): %w", name, err, ErrNodeFailed)
	}
	if !ok {
		return nil, fmt.Errorf("region %s: %w", name, ErrNotFound)
	}
	return r, nil
}

// work serves queued requests until the node closes.
func (n *Node) work() {
	defer n.wg.Done()
	for {
		j, ok := n.q.pop()
		if !ok {
			return
		}
		j.c.handleQueued(j.f)
		n.q.done(j)
		<-j.c.slots
		j.c.setIdleDeadline()
	}
}

// RegionStatus describes one region.
type RegionStatus struct {
	Name       string `json:"name"`
	Size       uint64 `json:"size"`
	Claimed    bool   `json:"claimed"`
	LastWriter string `json:"last_writer"`
}

// Status is what 'pmemctl memnode status' shows.
type Status struct {
	Epoch        uint64         `json:"epoch"`
	Regions      []RegionStatus `json:"regions"`
	Connections  int            `json:"connections"`
	QueueHigh    int            `json:"queue_high"`
	QueueLow     int            `json:"queue_low"`
	Reads        uint64         `json:"reads"`
	Writes       uint64         `json:"writes"`
	BytesServed  uint64         `json:"bytes_served"`
	BytesWritten uint64         `json:"bytes_written"`
	// DamagedReads counts the reads refused because a page did not match
	// its checksum.
	DamagedReads uint64 `json:"damaged_reads"`
	// Problems lists the regions set aside and the damage found at start
	// that is still there: a page repaired since is no longer listed.
	Problems []Problem `json:"problems,omitempty"`
}

// Status returns the node's regions, queue depths and counters.
func (n *Node) Status() Status {
	s := Status{Epoch: n.epoch, Reads: n.reads.Load(), Writes: n.writes.Load(),
		BytesServed: n.bytesRead.Load(), BytesWritten: n.bytesWritten.Load(), DamagedReads: n.damaged.Load()}
	s.QueueHigh, s.QueueLow = n.q.depths()
	n.mu.Lock()
	s.Connections = len(n.conns)
	problems := append([]Problem(nil), n.problems...)
	byName := make(map[string]*region, len(n.regions))
	for name, r := range n.regions {
		byName[name] = r
	}
	regions := append([]*region(nil), n.byID...)
	n.mu.Unlock()
	// A damaged page found at start stays listed until a write-back
	// makes it match its checksum again (a client repairing it from its
	// backup); a region set aside stays listed.
	for _, p := range problems {
		if r := byName[p.Region]; r != nil && p.Offset >= 0 && r.checkPage(uint64(p.Offset)/PageSize) == nil {
			continue
		}
		s.Problems = append(s.Problems, p)
	}
	for _, r := range regions {
		r.mu.Lock()
		s.Regions = append(s.Regions, RegionStatus{Name: r.name, Size: r.size, Claimed: r.claimedBy != nil,
			LastWriter: fmt.Sprintf("%x", r.lastWriter[:])})
		r.mu.Unlock()
	}
	return s
}
