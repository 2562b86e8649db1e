package remote

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
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

	connMu sync.Mutex
	cl     *client
	epoch  uint64
	region uint32

	suspect atomic.Bool
	validMu sync.Mutex
	valid   []uint64 // pages known to hold in the backup what the node has

	inflightMu sync.Mutex
	inflight   map[uintptr]bool
	work       chan uintptr
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
	a := &agent{uffd: uffd, inflight: map[uintptr]bool{}, work: make(chan uintptr, 1024)}
	err = a.start(buf[:n])
	reply := "ok"
	if err != nil {
		reply = err.Error()
	}
	if _, werr := uc.Write([]byte(reply)); werr != nil || err != nil {
		return errors.Join(err, werr)
	}
	go a.readFaults()
	for range max(runtime.GOMAXPROCS(0)*4, 8) {
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

// start reads the configuration, opens the backup and connects.
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = a.conn(ctx, true)
	return err
}

// conn returns the node connection, dialling and resolving the region
// again if the last one failed or redo is set.
func (a *agent) conn(ctx context.Context, redo bool) (*client, error) {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.cl != nil && !redo {
		select {
		case <-a.cl.done:
		default:
			return a.cl, nil
		}
	}
	if a.cl != nil {
		a.cl.close()
		a.cl = nil
	}
	cl, err := dial(ctx, a.cfg.Addr, a.tls)
	if err != nil {
		return nil, err
	}
	r, epoch, err := cl.resolve(ctx, a.cfg.Name, false, WriterID{})
	if err == nil && r.size != a.cfg.Size {
		err = fmt.Errorf("region %s is %d bytes, the pool %d", a.cfg.Name, r.size, a.cfg.Size)
	}
	if err != nil {
		cl.close()
		return nil, err
	}
	a.cl, a.epoch, a.region = cl, epoch, r.id
	return cl, nil
}

// readFaults hands each fault to a worker, once per page in flight.
func (a *agent) readFaults() {
	buf := make([]byte, 64*uffdMsgSize)
	for {
		n, err := unix.Read(a.uffd, buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			os.Exit(0) // the pool is gone
		}
		for m := buf[:n]; len(m) >= uffdMsgSize; m = m[uffdMsgSize:] {
			addr, ok := faultAddr(m)
			if !ok {
				continue
			}
			page := addr &^ (PageSize - 1)
			a.inflightMu.Lock()
			dup := a.inflight[page]
			a.inflight[page] = true
			a.inflightMu.Unlock()
			if !dup {
				a.work <- page
			}
		}
	}
}

func (a *agent) worker() {
	buf := make([]byte, PageSize)
	for page := range a.work {
		err := a.serve(page, buf)
		a.inflightMu.Lock()
		delete(a.inflight, page)
		a.inflightMu.Unlock()
		if err != nil {
			fmt.Fprintln(os.Stderr, "pmemgo remote agent:", err)
			os.Exit(1)
		}
	}
}

// serve installs the page at addr: from the node if it answers within
// the timeout, else from the backup if the backup holds the page, else
// from the node once it answers.
func (a *agent) serve(addr uintptr, buf []byte) error {
	off := uint64(addr) - a.cfg.Base
	for {
		if !a.suspect.Load() || !a.isValid(off) {
			err := a.fetch(off, buf)
			if err == nil {
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

// fetch reads one page from the node within the timeout.
func (a *agent) fetch(off uint64, buf []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	cl, err := a.conn(ctx, false)
	if err != nil {
		return err
	}
	a.connMu.Lock()
	epoch, region := a.epoch, a.region
	a.connMu.Unlock()
	err = cl.read(ctx, epoch, region, off, buf, prioDemand)
	if errors.Is(err, ErrStale) {
		if cl, err = a.conn(ctx, true); err == nil {
			a.connMu.Lock()
			epoch, region = a.epoch, a.region
			a.connMu.Unlock()
			err = cl.read(ctx, epoch, region, off, buf, prioDemand)
		}
	}
	return err
}

// probe clears the suspicion once the node answers again.
func (a *agent) probe() {
	for {
		time.Sleep(max(a.cfg.Timeout, 20*time.Millisecond))
		if !a.suspect.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
		cl, err := a.conn(ctx, false)
		if err == nil {
			_, _, err = cl.resolve(ctx, a.cfg.Name, false, WriterID{})
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			_, err = a.conn(ctx, true)
		}
		cancel()
		if err == nil {
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
