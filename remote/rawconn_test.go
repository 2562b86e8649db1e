package remote

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// rawPair returns a rawConn and the plain connection at its other end.
func rawPair(t *testing.T) (*rawConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	peer, err := l.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { peer.Close() })
	rc, err := newRawConn(c)
	require.NoError(t, err)
	t.Cleanup(func() { rc.Close() })
	return rc, peer
}

func rawFd(t *testing.T, rc *rawConn) int {
	fd := -1
	require.NoError(t, rc.sc.Control(func(s uintptr) { fd = int(s) }))
	return fd
}

// polledFds returns the descriptors that the epoll instances of this
// process watch, the runtime's network poller's among them.
func polledFds(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	watched := map[int]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if rest, ok := strings.CutPrefix(line, "tfd:"); ok {
				if n, err := strconv.Atoi(strings.Fields(rest)[0]); err == nil {
					watched[n] = true
				}
			}
		}
	}
	return watched
}

// TestRawConnNotPolled checks that a raw connection's socket is watched
// by no epoll instance: the runtime's poller would otherwise wake its
// thread at every packet as well as the reader.
func TestRawConnNotPolled(t *testing.T) {
	rc, _ := rawPair(t)
	fd := rawFd(t, rc)
	assert.False(t, polledFds(t)[fd], "the raw connection's descriptor %d is watched by an epoll instance", fd)
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.Zero(t, flags&unix.O_NONBLOCK, "the raw connection's socket is non-blocking")
}

// TestRawConnCloseWakesReader closes a raw connection while another
// goroutine is blocked reading it: the read returns at once, as a node's
// Close needs, instead of waiting for the peer.
func TestRawConnCloseWakesReader(t *testing.T) {
	rc, _ := rawPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := rc.Read(make([]byte, 16))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the read block
	require.NoError(t, rc.Close())
	select {
	case err := <-done:
		assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed), "read after close: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a read blocked on a raw connection was not woken by its Close")
	}
	_, err := rc.Read(make([]byte, 1))
	assert.ErrorIs(t, err, net.ErrClosed)
}

// TestRawConnDeadlines checks that deadlines set as socket timeouts,
// rounded up to the millisecond and set again only when they change,
// still end reads and are lifted.
func TestRawConnDeadlines(t *testing.T) {
	rc, peer := rawPair(t)
	fd := rawFd(t, rc)
	timeout := func() time.Duration {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO)
		require.NoError(t, err)
		return time.Duration(tv.Nano())
	}
	require.NoError(t, rc.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	assert.Equal(t, 200*time.Millisecond, timeout())
	require.NoError(t, rc.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	assert.Equal(t, 20*time.Millisecond, timeout())
	_, err := rc.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)

	// A deadline already past still ends a read.
	require.NoError(t, rc.SetReadDeadline(time.Now().Add(-time.Second)))
	// The kernel keeps the timeout in clock ticks.
	assert.Positive(t, timeout())
	assert.LessOrEqual(t, timeout(), 10*time.Millisecond)
	_, err = rc.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)

	require.NoError(t, rc.SetReadDeadline(time.Time{}))
	assert.Zero(t, timeout())
	_, err = peer.Write([]byte("x"))
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = io.ReadFull(rc, b)
	require.NoError(t, err)
	assert.Equal(t, "x", string(b))
}
