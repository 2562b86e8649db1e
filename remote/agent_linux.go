package remote

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/internal/certs"
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
const agentWorkers = 4

// agentEnv marks a process started as an agent; its socket is fd 3.
const agentEnv = "PMEMGO_REMOTE_AGENT"

// agentConfig is what an agent is told at start, with the userfaultfd.
type agentConfig struct {
	Addr     string
	Name     string
	Insecure bool
	TLS      TLSFiles
	Base     uint64
	Size     uint64
	Backup   string
	Timeout  time.Duration
	// Complete says the backup holds every page of the region, so that any
	// page may be served from it when the node does not answer.
	Complete bool
}

// AgentMain runs the page-fault agent and exits if this process was
// started as one, and returns at once otherwise. A program that opens
// remote pools with the default Options.Agent calls it first thing in
// main (a test binary in TestMain), since the agent is the program itself
// started again.
func AgentMain() {
	if os.Getenv(agentEnv) == "" {
		return
	}
	if err := runAgent(os.NewFile(3, "agent-socket")); err != nil {
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
}

func runAgent(sock *os.File) error {
	fc, err := net.FileConn(sock)
	sock.Close()
	if err != nil {
		return err
	}
	uc := fc.(*net.UnixConn)
	defer uc.Close()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	uffd, err := receiveFd(oob[:oobn])
	if err != nil {
		return err
	}
	a := &agent{uffd: uffd, inflight: map[uintptr]bool{}}
	err = a.start(buf[:n])
	reply := "ok"
	if err != nil {
		reply = err.Error()
	}
	if _, werr := uc.Write([]byte(reply)); werr != nil || err != nil {
		return errors.Join(err, werr)
	}
	// Each worker reads faults itself and has its own connection, so that
	// a fault passes through no other goroutine on its way to the node
	// and back.
	// Workers blocked reading the userfaultfd are all woken by each
	// fault, so there are only as many as needed to wait on the node for
	// a few pages at once.
	for range agentWorkers {
		go a.worker()
	}
	go a.probe()
	// The owner closes the socket when it closes the pool or dies.
	_, _ = uc.Read(buf[:1])
	return nil
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
	var f fetcher
	defer f.close()
	return f.connect(a, time.Now().Add(10*time.Second))
}

// fetcher is one worker's connection to the node.
type fetcher struct {
	sc     *syncConn
	epoch  uint64
	region uint32
}

// connect dials the node and resolves the region.
func (f *fetcher) connect(a *agent, deadline time.Time) error {
	f.close()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	sc, err := dialSync(ctx, a.cfg.Addr, a.tls)
	if err != nil {
		return err
	}
	fr, err := sc.call(deadline, tResolve, 0, appendResolve(nil, resolveReq{name: a.cfg.Name}), nil)
	var r regionInfo
	if err == nil {
		if err = expect(fr, tRegion); err == nil {
			r, err = decodeRegion(fr.payload)
		}
	}
	if err == nil && r.size != a.cfg.Size {
		err = fmt.Errorf("region %s is %d bytes, the pool %d", a.cfg.Name, r.size, a.cfg.Size)
	}
	if err != nil {
		sc.close()
		return err
	}
	f.sc, f.epoch, f.region = sc, fr.epoch, r.id
	return nil
}

// read fetches one page by deadline, connecting first if needed. Any
// failure drops the connection: a late reply must not be taken for the
// next request's.
func (f *fetcher) read(a *agent, off uint64, buf []byte, deadline time.Time) error {
	if f.sc == nil {
		if err := f.connect(a, deadline); err != nil {
			return err
		}
	}
	_, err := f.sc.call(deadline, tRead, f.epoch, appendRead(nil, readReq{region: f.region, off: off, n: uint32(len(buf)), prio: prioDemand}), buf)
	if errors.Is(err, ErrStale) {
		// The node restarted: its regions have new handles.
		if err = f.connect(a, deadline); err == nil {
			_, err = f.sc.call(deadline, tRead, f.epoch, appendRead(nil, readReq{region: f.region, off: off, n: uint32(len(buf)), prio: prioDemand}), buf)
		}
	}
	if err != nil {
		f.close()
	}
	return err
}

func (f *fetcher) close() {
	if f.sc != nil {
		f.sc.close()
		f.sc = nil
	}
}

// worker reads fault messages and serves them, once per page in flight:
// the threads of a duplicate fault are woken by the first one's copy.
func (a *agent) worker() {
	var f fetcher
	msgs := make([]byte, 16*uffdMsgSize)
	buf := make([]byte, PageSize)
	for {
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
			a.inflightMu.Lock()
			dup := a.inflight[page]
			a.inflight[page] = true
			a.inflightMu.Unlock()
			if dup {
				continue
			}
			err := a.serve(&f, page, buf)
			a.inflightMu.Lock()
			delete(a.inflight, page)
			a.inflightMu.Unlock()
			if err != nil {
				fmt.Fprintln(os.Stderr, "pmemgo remote agent:", err)
				os.Exit(1)
			}
		}
	}
}

// serve installs the page at addr: from the node if it answers within
// the timeout, else from the backup if the backup holds the page, else
// from the node once it answers.
func (a *agent) serve(f *fetcher, addr uintptr, buf []byte) error {
	off := uint64(addr) - a.cfg.Base
	if off >= a.cfg.Size {
		return fmt.Errorf("fault at %#x outside the pool", addr)
	}
	for {
		if !a.suspect.Load() || !a.isValid(off) {
			if err := f.read(a, off, buf, time.Now().Add(a.cfg.Timeout)); err == nil {
				if _, err := a.backup.WriteAt(buf, int64(off)); err != nil {
					return fmt.Errorf("backup: %w", err)
				}
				a.setValid(off)
				return uffdCopy(a.uffd, addr, buf)
			}
			a.suspect.Store(true)
		}
		if a.isValid(off) {
			if _, err := a.backup.ReadAt(buf, int64(off)); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			return uffdCopy(a.uffd, addr, buf)
		}
		time.Sleep(a.cfg.Timeout / 4)
	}
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
