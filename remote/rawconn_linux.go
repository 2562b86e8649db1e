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
// plain system calls. The agent's fetches and the node's connections use
// it: a goroutine parked in the network poller is woken through another
// thread, and the runtime then wakes a third to spin for more work, which
// on a virtual machine costs a fault tens of microseconds each, while a
// thread blocked in read is woken by the kernel directly and returns with
// its P. Each connection so holds a thread while it waits. Deadlines are
// socket timeouts.
type rawConn struct {
	f      *os.File
	sc     syscall.RawConn
	local  net.Addr
	remote net.Addr

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
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &rawConn{f: f, sc: rc, local: local, remote: remote}, nil
}

// Read and Write go through the file's RawConn, which holds the
// descriptor while the call blocks: a Close from another goroutine then
// cannot free its number for reuse under a read in progress.
func (c *rawConn) Read(b []byte) (int, error) {
	var n int
	var err error
	if cerr := c.sc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), b)
			if !errors.Is(err, unix.EINTR) {
				return true
			}
		}
	}); cerr != nil {
		// The only failure is that the file is closed.
		return 0, net.ErrClosed
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, os.ErrDeadlineExceeded
	case err != nil:
		return 0, err
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) Write(b []byte) (int, error) {
	done := 0
	var err error
	if cerr := c.sc.Write(func(fd uintptr) bool {
		for done < len(b) {
			var n int
			n, err = unix.Write(int(fd), b[done:])
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				return true
			}
			done += n
		}
		return true
	}); cerr != nil {
		return done, net.ErrClosed
	}
	if errors.Is(err, unix.EAGAIN) {
		return done, os.ErrDeadlineExceeded
	}
	return done, err
}

// Close shuts the socket down first, which wakes a read blocked in
// another goroutine; closing the descriptor alone would not.
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
