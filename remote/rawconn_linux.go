package remote

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// rawConn is a TCP connection in blocking mode, read and written with
// plain system calls. The agent's fetches use it: a goroutine parked in
// the network poller is woken through another thread, which on a virtual
// machine cost a fault over a hundred microseconds, while a thread blocked
// in read is woken by the kernel directly. Deadlines are socket timeouts.
type rawConn struct {
	f      *os.File
	fd     int
	local  net.Addr
	remote net.Addr
}

// newRawConn takes over c, a *net.TCPConn, which is closed.
func newRawConn(c net.Conn) (*rawConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("raw connection over %T", c)
	}
	f, err := tc.File()
	local, remote := c.LocalAddr(), c.RemoteAddr()
	c.Close()
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, err
	}
	return &rawConn{f: f, fd: fd, local: local, remote: remote}, nil
}

func (c *rawConn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(c.fd, b)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, os.ErrDeadlineExceeded
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *rawConn) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := unix.Write(c.fd, b[done:])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return done, os.ErrDeadlineExceeded
		case err != nil:
			return done, err
		}
		done += n
	}
	return done, nil
}

func (c *rawConn) Close() error         { return c.f.Close() }
func (c *rawConn) LocalAddr() net.Addr  { return c.local }
func (c *rawConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both socket timeouts to the time left until t.
func (c *rawConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

func (c *rawConn) SetReadDeadline(t time.Time) error {
	return c.timeout(unix.SO_RCVTIMEO, t)
}

func (c *rawConn) SetWriteDeadline(t time.Time) error {
	return c.timeout(unix.SO_SNDTIMEO, t)
}

func (c *rawConn) timeout(opt int, t time.Time) error {
	var tv unix.Timeval
	if !t.IsZero() {
		// A zero timeout means none: a deadline already past gets the
		// shortest one instead.
		tv = unix.NsecToTimeval(max(time.Until(t).Nanoseconds(), 1000))
	}
	return unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, opt, &tv)
}
