package mirror

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"

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
