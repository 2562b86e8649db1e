package mirror_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// writeCounter dials for a primary and counts the writes its connections
// make and the bytes they carry, below TLS.
type writeCounter struct {
	mu            sync.Mutex
	writes, bytes int
}

func (w *writeCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, w: w}, nil
}

func (w *writeCounter) reset() {
	w.mu.Lock()
	w.writes, w.bytes = 0, 0
	w.mu.Unlock()
}

type countedConn struct {
	net.Conn
	w *writeCounter
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	c.w.writes++
	c.w.bytes += len(p)
	c.w.mu.Unlock()
	return c.Conn.Write(p)
}

// TestTLSGathersRecords commits a transaction of 2 MiB and checks that
// the primary's TLS records reach the connection in writes of 64 KiB or
// more, rather than one write of at most 16 KiB per record, and that the
// replica acknowledges the batch (its chain value covers every byte).
func TestTLSGathersRecords(t *testing.T) {
	_, addr := startServer(t, fastDir(t))
	h, err := heap.Open(filepath.Join(fastDir(t), "p.pool"), &heap.Options{Size: 16 << 20, LogSize: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	var wc writeCounter
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Mode: mirror.Async, Dial: wc.dial}))
	require.NoError(t, err)
	defer m.Close()
	flush(t, m)

	const size = 2 << 20
	wc.reset()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[bigRoot](tx)
		if err != nil {
			return err
		}
		if r.Chunks[0], err = heap.MakeSlice[byte](tx, size, size); err != nil {
			return err
		}
		for i := range r.Chunks[0] {
			r.Chunks[0][i] = byte(i*7 + 1)
		}
		return nil
	}))
	flush(t, m)
	wc.mu.Lock()
	writes, bytes := wc.writes, wc.bytes
	wc.mu.Unlock()
	require.Greater(t, bytes, size, "the batch was sent")
	assert.GreaterOrEqual(t, bytes/writes, 64<<10, "%d bytes in %d writes", bytes, writes)

}
