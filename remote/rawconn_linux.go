package remote

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rawConn is a TCP connection in blocking mode, read and written with
// plain system calls. The agent's fetches use it: a goroutine parked in
// the network poller is woken through another thread, which on a virtual
// machine cost a fault over a hundred microseconds, while a thread blocked
// in read is woken by the kernel directly. Deadlines are socket timeouts.
//
// The node does not use it: a goroutine blocked in a system call keeps
// its P until the runtime's monitor takes it back, so the queue worker a
// connection hands a write-back to waited for a P (write-backs took 50%
// longer).
type rawConn struct {
	f      *os.File
	sc     syscall.RawConn
	local  net.Addr
	remote net.Addr

	// The calls of sc.Read and sc.Write, bound once so that a read or a
	// write allocates nothing, and their arguments and results, guarded
	// by rmu and wmu.
	readFn, writeFn func(uintptr) bool
	rmu, wmu        sync.Mutex
	rb, wb          []byte
	rn, wn          int
	rerr, werr      error

	// tmu guards the socket timeouts last set, so that a deadline as far
	// off as the previous one costs no system call.
	tmu      sync.Mutex
	timeouts [2]time.Duration
}

// newRawConn takes over c, a *net.TCPConn, which is closed. Its socket
// is duplicated by hand: the *os.File that TCPConn.File returns is
// registered with the runtime's poller, and stays so once put in blocking
// mode, so that every packet would still wake the poller's thread as well
// as the reader.
func newRawConn(c net.Conn) (*rawConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("raw connection over %T", c)
	}
	defer c.Close()
	local, remote := c.LocalAddr(), c.RemoteAddr()
	sc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	if cerr := sc.Control(func(fd uintptr) {
		if nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			if err = unix.SetNonblock(nfd, false); err != nil {
				unix.Close(nfd)
			}
		}
	}); cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, fmt.Errorf("raw connection: %w", err)
	}
	f := os.NewFile(uintptr(nfd), "tcp:"+remote.String())
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	rc := &rawConn{f: f, sc: raw, local: local, remote: remote}
	rc.readFn, rc.writeFn = rc.read, rc.write
	return rc, nil
}

// Read and Write go through the file's RawConn, which holds the
// descriptor while the call blocks: a Close from another goroutine then
// cannot free its number for reuse under a read in progress.
func (c *rawConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	c.rb = b
	cerr := c.sc.Read(c.readFn)
	n, err := c.rn, c.rerr
	c.rb, c.rerr = nil, nil
	c.rmu.Unlock()
	switch {
	case cerr != nil:
		// The only failure is that the file is closed.
		return 0, net.ErrClosed
	case errors.Is(err, unix.EAGAIN):
		return 0, os.ErrDeadlineExceeded
	case err != nil:
		return 0, err
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) read(fd uintptr) bool {
	for {
		c.rn, c.rerr = unix.Read(int(fd), c.rb)
		if !errors.Is(c.rerr, unix.EINTR) {
			return true
		}
	}
}

func (c *rawConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	c.wb, c.wn = b, 0
	cerr := c.sc.Write(c.writeFn)
	n, err := c.wn, c.werr
	c.wb, c.werr = nil, nil
	c.wmu.Unlock()
	switch {
	case cerr != nil:
		return n, net.ErrClosed
	case errors.Is(err, unix.EAGAIN):
		return n, os.ErrDeadlineExceeded
	}
	return n, err
}

func (c *rawConn) write(fd uintptr) bool {
	for c.wn < len(c.wb) {
		n, err := unix.Write(int(fd), c.wb[c.wn:])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			c.werr = err
			return true
		}
		c.wn += n
	}
	return true
}

// Close shuts the socket down first, which wakes a read blocked in
// another goroutine (a TLS alert's write, say); closing the descriptor
// alone would not.
func (c *rawConn) Close() error {
	_ = c.sc.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	return c.f.Close()
}

func (c *rawConn) LocalAddr() net.Addr  { return c.local }
func (c *rawConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both socket timeouts to the time left until t.
func (c *rawConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

func (c *rawConn) SetReadDeadline(t time.Time) error {
	return c.timeout(0, unix.SO_RCVTIMEO, t)
}

func (c *rawConn) SetWriteDeadline(t time.Time) error {
	return c.timeout(1, unix.SO_SNDTIMEO, t)
}

// timeoutGrain is how much later than asked a socket timeout may end: a
// fetch sets a deadline as far off as the last one, and two system calls
// per request, at a microsecond each here, are saved by not setting it
// again.
const timeoutGrain = time.Millisecond

func (c *rawConn) timeout(i, opt int, t time.Time) error {
	var d time.Duration
	if !t.IsZero() {
		// A zero timeout means none: a deadline already past gets the
		// shortest one instead. Rounding up keeps equal deadlines equal.
		d = (max(time.Until(t), time.Microsecond) + timeoutGrain - 1) / timeoutGrain * timeoutGrain
	}
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if d == c.timeouts[i] {
		return nil
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	var err error
	if cerr := c.sc.Control(func(fd uintptr) { err = unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, opt, &tv) }); cerr != nil {
		return cerr
	}
	if err == nil {
		c.timeouts[i] = d
	}
	return err
}
