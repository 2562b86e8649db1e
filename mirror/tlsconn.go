package mirror

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// batchWriteSize is how many bytes of TLS records a batchedTLS gathers
// into one write to the connection.
const batchWriteSize = 256 << 10

// maxRecord is the most plaintext a TLS record holds: a Write of no more
// is one record, which gathering would only copy.
const maxRecord = 16 << 10

// batchedTLS is the primary's TLS connection. crypto/tls writes each
// record of at most 16 KiB to the connection as it is sealed, one system
// call apiece: a batch of megabytes took hundreds, where plain TCP takes
// one. Write gathers the records of what it is given and writes them in
// a few large writes before it returns, so that nothing waits in the
// buffer after it.
type batchedTLS struct {
	*tls.Conn
	w *batchWriter
}

// Write writes p as TLS records, gathered into writes of up to
// batchWriteSize bytes.
func (c *batchedTLS) Write(p []byte) (int, error) {
	if len(p) <= maxRecord {
		return c.Conn.Write(p)
	}
	c.w.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.w.end(); err == nil && ferr != nil {
		// The records of p were not all written: the connection is
		// broken, whatever crypto/tls counted.
		return 0, ferr
	}
	return n, err
}

// writeFrames writes several frames to conn: over TLS gathered into few
// writes, over plain TCP with one writev.
func writeFrames(conn net.Conn, frames [][]byte) error {
	if c, ok := conn.(*batchedTLS); ok {
		return c.writeFrames(frames)
	}
	bufs := net.Buffers(frames)
	_, err := bufs.WriteTo(conn)
	return err
}

// writeFrames writes the records of several frames, gathered as Write
// gathers those of one: a replica that is behind is sent many small
// batches at once.
func (c *batchedTLS) writeFrames(frames [][]byte) error {
	c.w.begin()
	var err error
	for _, f := range frames {
		if _, err = c.Conn.Write(f); err != nil {
			break
		}
	}
	if ferr := c.w.end(); err == nil {
		err = ferr
	}
	return err
}

// Close closes the connection. crypto/tls closes the connection under a
// Write in flight at once, to break it, and otherwise first sends an
// alert; a gathered write still going on at the end of a Write is broken
// the same way, rather than the alert waiting behind it.
func (c *batchedTLS) Close() error {
	if c.w.close() {
		return c.w.Conn.Close()
	}
	return c.Conn.Close()
}

// batchWriter is the connection under a batchedTLS: between begin and
// end, what crypto/tls writes is gathered, and written when the buffer
// is full and at end; otherwise (the handshake, alerts) it is written at
// once. Records that crypto/tls writes from a Read, such as the answer to
// a key update, go through the same buffer in their order.
type batchWriter struct {
	net.Conn
	// busy is set from begin until end has written what was gathered,
	// closed once Close was called: Close reads them without waiting for
	// mu, which a write blocked on the connection holds.
	busy, closed atomic.Bool
	mu           sync.Mutex
	batched      bool
	buf          []byte
	err          error
}

func (w *batchWriter) begin() {
	w.busy.Store(true)
	w.mu.Lock()
	w.batched = true
	w.mu.Unlock()
}

// end writes what was gathered since begin, unless the connection is
// being closed.
func (w *batchWriter) end() error {
	defer w.busy.Store(false)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batched = false
	if w.closed.Load() && w.err == nil {
		w.err = net.ErrClosed
	}
	return w.flushLocked()
}

// close marks the writer closed, so that end no longer writes, and
// reports whether a gathered write may be under way, which closing the
// connection breaks.
func (w *batchWriter) close() (busy bool) {
	w.closed.Store(true)
	return w.busy.Load()
}

// Write gathers p while batched, and writes it at once otherwise. An
// error of a gathered write is returned by the next Write or by end.
func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if !w.batched {
		return w.Conn.Write(p)
	}
	if len(w.buf)+len(p) > batchWriteSize && len(w.buf) > 0 {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, batchWriteSize)
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// flushLocked writes what was gathered; after an error, nothing more is.
func (w *batchWriter) flushLocked() error {
	if w.err != nil {
		w.buf = w.buf[:0]
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, w.err = w.Conn.Write(w.buf)
	w.buf = w.buf[:0]
	return w.err
}
