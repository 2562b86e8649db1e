package remote

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/seal"
)

// The agent resolves the page faults of a remote pool's mapping. It is a
// process of its own, because a handler that needs the Go scheduler of
// the faulting process can deadlock: a goroutine blocked in a fault holds
// its thread and its P (the fault is not a system call the scheduler can
// see), and once every P is held so, a handler goroutine never runs. The
// agent receives the userfaultfd over a unix socket, as CRIU's lazy-pages
// daemon does, fetches each page from the node (or, when the node does not
// answer in time, from the local backup) and installs it with UFFDIO_COPY.

// agentWorkers is how many faults an agent serves at once.
const agentWorkers = 8

// agentEnv marks a process started as an agent; its socket is fd 3. Its
// value is the agent's role: roleKeeper for the process the pool's
// process starts, roleWorker for the one the keeper starts (see
// keeper_linux.go).
const agentEnv = "PMEMGO_REMOTE_AGENT"

const (
	roleKeeper = "keeper"
	roleWorker = "worker"
)

// agentConfig is what an agent is told at start, with the userfaultfd.
type agentConfig struct {
	Addr     string
	Name     string
	Insecure bool
	TLS      TLSFiles
	Base     uint64
	// Size is the mapping's, the pool's size; Region is the region's on
	// the node, larger when the pool is sealed.
	Size    uint64
	Region  uint64
	Backup  string
	Timeout time.Duration
	// Complete says the backup holds every page of the region, so that any
	// page may be served from it when the node does not answer.
	Complete bool
	// Readahead is how many pages, an aligned cluster around the one
	// faulted, a fault fetches; 1 means none.
	Readahead int
	// Pid is the pool's process, whose page map tells which pages of a
	// cluster are already in.
	Pid int
	// Argv is the command that starts an agent (Options.Agent, or the
	// pool's program): the keeper starts its workers with it.
	Argv []string
	// Key, for a sealed pool, is the pool key, and UUID the pool's: the
	// agent opens the records it fetches.
	Key  []byte   `json:",omitempty"`
	UUID [16]byte `json:",omitempty"`
	// Restart is set when the agent replaces one that died: the threads
	// whose faults the dead one took must be woken to fault again, and the
	// node need not answer, since the backup may serve.
	Restart bool
}

// AgentMain runs the page-fault agent and exits if this process was
// started as one, and returns at once otherwise. A program that opens
// remote pools with the default Options.Agent calls it first thing in
// main (a test binary in TestMain), since the agent is the program itself
// started again.
func AgentMain() {
	role := os.Getenv(agentEnv)
	if role == "" {
		return
	}
	run := runKeeper
	if role == roleWorker {
		run = runAgent
	}
	if err := run(os.NewFile(3, "agent-socket")); err != nil {
		fmt.Fprintln(os.Stderr, "pmemgo remote agent:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// agent serves one pool's faults.
type agent struct {
	cfg    agentConfig
	tls    *tls.Config
	uffd   int
	backup *os.File

	suspect atomic.Bool
	validMu sync.Mutex
	valid   []uint64 // pages known to hold in the backup what the node has

	inflightMu sync.Mutex
	inflight   map[uintptr]bool
	// pagemap is the pool process's /proc page map, or nil: readahead
	// installs only pages that it shows absent.
	pagemap *os.File
	// open opens the records of a sealed pool; nil for a plain one.
	open *seal.Opener
	// ctl is the socket to the keeper, for warnings and the failure that
	// stops this worker.
	ctlMu sync.Mutex
	ctl   *net.UnixConn
}

func runAgent(sock *os.File) error {
	uc, cfg, uffd, err := receiveConfig(sock)
	if err != nil {
		return err
	}
	defer uc.Close()
	buf := make([]byte, 1)
	a := &agent{uffd: uffd, inflight: map[uintptr]bool{}, ctl: uc}
	err = a.start(cfg)
	var eps []int
	if err == nil {
		eps, err = faultPollers(uffd)
	}
	if _, werr := uc.Write([]byte(replyLine(err))); werr != nil || err != nil {
		return errors.Join(err, werr)
	}
	// Each worker waits for faults itself and has its own connection, so
	// that a fault passes through no other goroutine on its way to the
	// node and back.
	for _, ep := range eps {
		go a.worker(ep)
	}
	go a.probe()
	// The owner closes the socket when it closes the pool or dies.
	_, _ = uc.Read(buf)
	return nil
}

// faultPollers returns an epoll instance per worker, each waiting for
// faults on uffd exclusively, so that a fault wakes one idle worker.
// Threads blocked in read on a userfaultfd would all be woken by each
// fault, and on two cores the losers delay the one that got it; one
// reader at a time, the others waiting their turn, would put a hand-off
// between goroutines, and the wake-up of a thread, on every fault's path.
// Poll needs the descriptor non-blocking.
func faultPollers(uffd int) ([]int, error) {
	if err := unix.SetNonblock(uffd, true); err != nil {
		return nil, fmt.Errorf("userfaultfd: %w", err)
	}
	var eps []int
	for range agentWorkers {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err == nil {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(uffd)}
			if err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, uffd, &ev); err != nil {
				unix.Close(ep)
			}
		}
		if err != nil {
			for _, ep := range eps {
				unix.Close(ep)
			}
			return nil, fmt.Errorf("epoll on the userfaultfd: %w", err)
		}
		eps = append(eps, ep)
	}
	return eps, nil
}

// receiveConfig reads, on the agent's socket, its configuration and the
// userfaultfd.
func receiveConfig(sock *os.File) (*net.UnixConn, []byte, int, error) {
	fc, err := net.FileConn(sock)
	sock.Close()
	if err != nil {
		return nil, nil, -1, err
	}
	uc := fc.(*net.UnixConn)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err == nil {
		var uffd int
		if uffd, err = receiveFd(oob[:oobn]); err == nil {
			return uc, buf[:n], uffd, nil
		}
	}
	uc.Close()
	return nil, nil, -1, fmt.Errorf("read configuration: %w", err)
}

func receiveFd(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("no userfaultfd with the configuration: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("no userfaultfd with the configuration: %v", err)
	}
	return fds[0], nil
}

// start reads the configuration, opens the backup and checks that the
// node serves the region.
func (a *agent) start(b []byte) error {
	if err := json.Unmarshal(b, &a.cfg); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	var err error
	if !a.cfg.Insecure {
		if a.tls, err = a.cfg.TLS.load(); err != nil {
			return err
		}
	}
	if a.backup, err = os.OpenFile(a.cfg.Backup, os.O_RDWR, 0); err != nil {
		return err
	}
	pages := (a.cfg.Size + PageSize - 1) / PageSize
	a.valid = make([]uint64, (pages+63)/64)
	if a.cfg.Complete {
		for i := range a.valid {
			a.valid[i] = ^uint64(0)
		}
	}
	maxRA := MaxRead / PageSize
	if len(a.cfg.Key) > 0 {
		keys, err := seal.NewKeys(a.cfg.Key)
		if err != nil {
			return err
		}
		a.open = keys.NewOpener(a.cfg.UUID)
		// A page's records are two pages.
		maxRA /= 2
	}
	if a.cfg.Readahead < 1 || a.cfg.Readahead > maxRA || a.cfg.Readahead&(a.cfg.Readahead-1) != 0 {
		a.cfg.Readahead = 1
	}
	if a.cfg.Readahead > 1 {
		if a.pagemap, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", a.cfg.Pid)); err != nil {
			a.cfg.Readahead = 1
		}
	}
	if a.cfg.Restart {
		return nil
	}
	var f fetcher
	defer f.close()
	return f.connect(a, time.Now().Add(10*time.Second))
}

// worker reads fault messages and serves them, once per page in flight:
// the threads of a duplicate fault are woken by the first one's copy.
func (a *agent) worker(ep int) {
	var f fetcher
	evs := make([]unix.EpollEvent, 1)
	// One message at a time: the faults waiting behind it wake other
	// workers, and are served at the same time.
	msgs := make([]byte, uffdMsgSize)
	buf := make([]byte, a.cfg.Readahead*PageSize)
	var recs []byte
	if a.open != nil {
		recs = make([]byte, 2*len(buf))
	}
	for {
		if _, err := unix.EpollWait(ep, evs, -1); err != nil && !errors.Is(err, unix.EINTR) {
			os.Exit(0) // the pool is gone
		}
		// Another worker may have read the fault first: then EAGAIN.
		n, err := unix.Read(a.uffd, msgs)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			os.Exit(0) // the pool is gone
		}
		for m := msgs[:n]; len(m) >= uffdMsgSize; m = m[uffdMsgSize:] {
			addr, ok := faultAddr(m)
			if !ok {
				continue
			}
			page := addr &^ (PageSize - 1)
			mine, ok := a.claim(page)
			if !ok {
				continue
			}
			err := a.serve(&f, page, mine, buf, recs)
			a.inflightMu.Lock()
			for _, p := range mine {
				delete(a.inflight, p)
			}
			a.inflightMu.Unlock()
			if err != nil {
				// The page cannot be had (the node's copy is damaged and
				// the backup does not hold it): its readers fault (SIGBUS)
				// rather than wait for ever, and the other pages are still
				// served. Without UFFDIO_POISON the worker gives up.
				if perr := uffdPoison(a.uffd, page); perr != nil {
					err = errors.Join(err, perr)
					fmt.Fprintln(os.Stderr, "pmemgo remote agent:", err)
					_ = tell(&a.ctlMu, a.ctl, "failed", err.Error())
					os.Exit(1)
				}
				_ = tell(&a.ctlMu, a.ctl, "warn", fmt.Sprintf("the page at %#x cannot be served, its readers fault: %v", page, err))
			}
		}
	}
}

// claim marks page in flight, with the other pages of its readahead
// cluster that no other worker serves, and returns them, page first. It
// reports false if page is in flight already: the threads waiting on it
// are woken by that worker's copy.
func (a *agent) claim(page uintptr) ([]uintptr, bool) {
	a.inflightMu.Lock()
	defer a.inflightMu.Unlock()
	if a.inflight[page] {
		return nil, false
	}
	a.inflight[page] = true
	mine := []uintptr{page}
	span := uintptr(a.cfg.Readahead) * PageSize
	lo := a.cfg.Base + (uint64(page)-a.cfg.Base)/uint64(span)*uint64(span)
	for p := uintptr(lo); p < uintptr(lo)+span && uint64(p) < a.cfg.Base+a.cfg.Size; p += PageSize {
		if p != page && !a.inflight[p] {
			a.inflight[p] = true
			mine = append(mine, p)
		}
	}
	return mine, true
}

// serve installs the page at pages[0]: from the node if it answers within
// the timeout, else from the backup if the backup holds the page, else
// from the node once it answers. Fetched from the node, the other pages
// of its cluster come along.
func (a *agent) serve(f *fetcher, addr uintptr, pages []uintptr, buf, recs []byte) error {
	off := uint64(addr) - a.cfg.Base
	if off >= a.cfg.Size {
		return fmt.Errorf("fault at %#x outside the pool", addr)
	}
	span := uint64(len(buf))
	lo := off / span * span
	cluster := buf[:min(span, a.cfg.Size-lo)]
	page := buf[off-lo : off-lo+PageSize]
	for {
		if !a.suspect.Load() || !a.isValid(off) {
			err := a.fetch(f, lo, cluster, recs)
			if err == nil {
				return a.installCluster(addr, pages, lo, cluster, recs)
			}
			if errors.Is(err, pmemgo.ErrCorrupt) {
				// The node's copy is damaged: the backup's, if it holds
				// the page, is the pool's, and repairs the node's.
				a.repair(lo, uint64(len(cluster)))
				if !a.isValid(off) {
					if len(cluster) > PageSize {
						// The damage may lie in another page of the cluster.
						err = a.fetch(f, off, page, recs)
						if err == nil {
							return a.installCluster(addr, pages[:1], off, page, recs)
						}
						if !errors.Is(err, pmemgo.ErrCorrupt) {
							a.suspect.Store(true)
							continue
						}
					}
					return fmt.Errorf("memory node %s, region %s: %w", a.cfg.Addr, a.cfg.Name, err)
				}
				_ = tell(&a.ctlMu, a.ctl, "warn", fmt.Sprintf("memory node %s, region %s: %v; served from the backup", a.cfg.Addr, a.cfg.Name, err))
			} else {
				a.suspect.Store(true)
			}
		}
		if a.isValid(off) {
			if err := a.readBackup(page, off, recs); err != nil {
				return fmt.Errorf("backup %s: %w", a.cfg.Backup, err)
			}
			return uffdCopy(a.uffd, addr, page)
		}
		time.Sleep(a.cfg.Timeout / 4)
	}
}

// repair asks the pool's process to hand the node the backup's copy of
// the pages of [lo, lo+n) that the backup holds, since one of them, which
// the error does not say, is damaged on the node.
func (a *agent) repair(lo, n uint64) {
	for off := lo; off < lo+n; off += PageSize {
		if a.isValid(off) {
			_ = tell(&a.ctlMu, a.ctl, "repair", strconv.FormatUint(off, 10))
		}
	}
}

// fetch reads the cluster of pages at pool offset lo from the node, by
// way of their records, opened into cluster, if the pool is sealed.
func (a *agent) fetch(f *fetcher, lo uint64, cluster, recs []byte) error {
	deadline := time.Now().Add(a.cfg.Timeout)
	if a.open == nil {
		return f.read(a, lo, cluster, deadline)
	}
	recs = recs[:2*len(cluster)]
	if err := f.read(a, recordOff(lo), recs, deadline); err != nil {
		return err
	}
	return openRecords(a.open, cluster, recs, lo)
}

// readBackup reads the page at pool offset off from the backup.
func (a *agent) readBackup(page []byte, off uint64, recs []byte) error {
	if a.open == nil {
		_, err := a.backup.ReadAt(page, int64(off))
		return err
	}
	recs = recs[:2*PageSize]
	if _, err := a.backup.ReadAt(recs, int64(recordOff(off))); err != nil {
		return err
	}
	return openRecords(a.open, page, recs, off)
}

// installCluster installs the faulted page addr and the pages of its
// fetched cluster that this worker claimed (pages) and that are absent,
// each contiguous run written to the backup first and then copied in with
// one UFFDIO_COPY. A present page may hold stores, or commits the node has
// not had yet, so it is left alone, and so is its backup copy. An absent
// claimed page stays absent until copied, since only this worker can
// install it; the faulted page is absent by definition.
func (a *agent) installCluster(addr uintptr, pages []uintptr, lo uint64, cluster, recs []byte) error {
	base := uintptr(a.cfg.Base + lo)
	n := len(cluster) / PageSize
	want := make([]bool, n)
	want[(addr-base)/PageSize] = true
	if a.pagemap != nil && len(pages) > 1 {
		ents := make([]byte, 8*n)
		if _, err := a.pagemap.ReadAt(ents, int64(base/PageSize)*8); err == nil {
			for _, p := range pages[1:] {
				i := (p - base) / PageSize
				// Bit 63: present in memory; bit 62: swapped out.
				want[i] = le.Uint64(ents[8*i:])>>62 == 0
			}
		}
	}
	for i := 0; i < n; {
		if !want[i] {
			i++
			continue
		}
		j := i
		for j < n && want[j] {
			j++
		}
		run := cluster[i*PageSize : j*PageSize]
		off := lo + uint64(i*PageSize)
		stored, at := run, off
		if a.open != nil {
			stored, at = recs[2*i*PageSize:2*j*PageSize], recordOff(off)
		}
		if _, err := a.backup.WriteAt(stored, int64(at)); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		for k := i; k < j; k++ {
			a.setValid(lo + uint64(k*PageSize))
		}
		if err := uffdCopy(a.uffd, base+uintptr(i*PageSize), run); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// probe clears the suspicion once the node answers again.
func (a *agent) probe() {
	var f fetcher
	page := make([]byte, PageSize)
	for {
		time.Sleep(max(a.cfg.Timeout, 20*time.Millisecond))
		if !a.suspect.Load() {
			continue
		}
		if f.read(a, 0, page, time.Now().Add(a.cfg.Timeout)) == nil {
			a.suspect.Store(false)
		}
	}
}

func (a *agent) isValid(off uint64) bool {
	p := off / PageSize
	a.validMu.Lock()
	defer a.validMu.Unlock()
	return a.valid[p/64]&(1<<(p%64)) != 0
}

func (a *agent) setValid(off uint64) {
	p := off / PageSize
	a.validMu.Lock()
	a.valid[p/64] |= 1 << (p % 64)
	a.validMu.Unlock()
}

// TLSFiles names the PEM files a client authenticates with (see 'pmemctl
// cert'): the agent process loads them itself, since a *tls.Config cannot
// be handed to another process.
type TLSFiles struct {
	CA, Cert, Key string
}

func (f TLSFiles) load() (*tls.Config, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("no TLS files (CA, certificate and key) and Insecure not set")
	}
	return certs.LoadTLS(f.CA, f.Cert, f.Key, false)
}
