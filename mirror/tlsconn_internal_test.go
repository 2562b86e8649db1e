package mirror

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/tlstesting"
)

// countingConn counts the writes made to it.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestBatchedTLS writes, over the primary's TLS connection, one frame of
// many records, then many frames of one record at once, as a session
// does for a replica that is behind, and then one small frame. The peer
// reads every byte in order; the large frame and the many frames each
// take one write to the connection below TLS, the small frame one.
func TestBatchedTLS(t *testing.T) {
	d := tlstesting.Default(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(tls.Server(c, d.ServerConfig()))
		got <- b
	}()
	var raw *countingConn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		raw = &countingConn{Conn: c}
		return raw, err
	}
	cfg, err := clientTLS(d.PrimaryConfig())
	require.NoError(t, err)
	conn, err := tlsDial(dial, cfg)(context.Background(), "tcp", l.Addr().String())
	require.NoError(t, err)
	require.IsType(t, &batchedTLS{}, conn)

	var want bytes.Buffer
	frame := func(n int, b byte) []byte {
		f := bytes.Repeat([]byte{b}, n)
		want.Write(f)
		return f
	}
	raw.writes.Store(0)
	_, err = conn.Write(frame(200<<10, 1))
	require.NoError(t, err)
	assert.Equal(t, int64(1), raw.writes.Load(), "a frame of 200 KiB, 13 records")

	var frames [][]byte
	for i := range 40 {
		frames = append(frames, frame(600, byte(i)))
	}
	raw.writes.Store(0)
	require.NoError(t, writeFrames(conn, frames))
	assert.Equal(t, int64(1), raw.writes.Load(), "40 frames of one record")

	raw.writes.Store(0)
	_, err = conn.Write(frame(100, 2))
	require.NoError(t, err)
	assert.Equal(t, int64(1), raw.writes.Load(), "a small frame")

	require.NoError(t, conn.Close())
	assert.True(t, bytes.Equal(want.Bytes(), <-got), "the peer read what was written")
}

// TestBatchedTLSCloseBreaksWrite writes frames to a peer that stops
// reading after the handshake, until a gathered write blocks, and closes
// the connection from another goroutine, as a mirror that closes does:
// Close returns at once, and breaks the write, rather than wait behind
// it.
func TestBatchedTLSCloseBreaksWrite(t *testing.T) {
	d := tlstesting.Default(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	hold := make(chan struct{})
	defer close(hold)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tls.Server(c, d.ServerConfig()).Handshake()
		<-hold
	}()
	cfg, err := clientTLS(d.PrimaryConfig())
	require.NoError(t, err)
	conn, err := tlsDial((&net.Dialer{}).DialContext, cfg)(context.Background(), "tcp", l.Addr().String())
	require.NoError(t, err)

	var written atomic.Int64
	writeErr := make(chan error, 1)
	go func() {
		frame := make([]byte, 200<<10)
		for {
			if _, err := conn.Write(frame); err != nil {
				writeErr <- err
				return
			}
			written.Add(1)
		}
	}()
	// The peer's and this side's socket buffers fill within a few dozen
	// frames; then a write blocks.
	for last := int64(-1); last != written.Load(); {
		last = written.Load()
		time.Sleep(300 * time.Millisecond)
	}
	// crypto/tls's alert would wait up to 5 s, its own write deadline,
	// behind the blocked write; closing breaks it in microseconds.
	closed := make(chan error, 1)
	go func() { closed <- conn.Close() }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("Close waits behind a blocked write")
	}
	select {
	case err := <-writeErr:
		assert.Error(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the blocked write was not broken by Close")
	}
}
