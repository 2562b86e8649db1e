package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client is a connection to a memory node. Requests are pipelined: any
// number of goroutines may call at once, and replies are matched to
// requests by id.
type client struct {
	c     net.Conn
	wmu   sync.Mutex
	bw    *bufio.Writer
	epoch atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*call
	nextID  uint64
	err     error
	done    chan struct{}
}

// call is a request waiting for its reply. dst, if set, receives a data
// reply's bytes, which must fill it exactly.
type call struct {
	dst   []byte
	reply frame
	err   error
	done  chan struct{}
}

// dial connects to the node at addr, over TLS unless cfg is nil.
func dial(ctx context.Context, addr string, cfg *tls.Config) (*client, error) {
	c, err := dialConn(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	cl := &client{c: c, bw: bufio.NewWriterSize(c, 64<<10), pending: map[uint64]*call{}, done: make(chan struct{})}
	go cl.readLoop()
	return cl, nil
}

// dialConn connects to the node at addr, with TLS unless cfg is nil.
func dialConn(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if cfg != nil {
		return handshake(ctx, c, addr, cfg)
	}
	return c, nil
}

// handshake runs a TLS 1.3 client handshake on c, verifying the node
// against cfg's roots and the host of addr unless cfg names another.
func handshake(ctx context.Context, c net.Conn, addr string, cfg *tls.Config) (net.Conn, error) {
	cfg = cfg.Clone()
	cfg.MinVersion = tls.VersionTLS13
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with memory node %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// readLoop hands each reply to its caller until the connection fails.
func (cl *client) readLoop() {
	r := newFrameReader(cl.c)
	var err error
	for {
		var f frame
		if f, err = r.next(); err != nil {
			break
		}
		cl.epoch.Store(f.epoch)
		cl.mu.Lock()
		k := cl.pending[f.id]
		delete(cl.pending, f.id)
		cl.mu.Unlock()
		if k == nil {
			continue // its caller gave up waiting
		}
		switch {
		case f.t == tError:
			code, msg, derr := decodeError(f.payload)
			if derr != nil {
				k.err = derr
			} else {
				sentinel := codeErr(code)
				k.err = fmt.Errorf("memory node: %s: %w", strings.TrimSuffix(msg, ": "+sentinel.Error()), sentinel)
			}
		case k.dst != nil && f.t == tData:
			if len(f.payload) != len(k.dst) {
				k.err = fmt.Errorf("memory node sent %d bytes for a read of %d: %w", len(f.payload), len(k.dst), ErrProtocol)
			}
			copy(k.dst, f.payload)
		default:
			f.payload = append([]byte(nil), f.payload...)
		}
		k.reply = f
		close(k.done)
	}
	cl.fail(fmt.Errorf("connection to memory node: %w", err))
}

// fail ends every waiting call with err.
func (cl *client) fail(err error) {
	cl.mu.Lock()
	if cl.err == nil {
		cl.err = err
		close(cl.done)
	}
	pending := cl.pending
	cl.pending = map[uint64]*call{}
	cl.mu.Unlock()
	for _, k := range pending {
		k.err = err
		close(k.done)
	}
	cl.c.Close()
}

// do sends a request and waits for its reply or ctx.
func (cl *client) do(ctx context.Context, t msgType, epoch uint64, payload, dst []byte) (frame, error) {
	k := &call{dst: dst, done: make(chan struct{})}
	cl.mu.Lock()
	if cl.err != nil {
		cl.mu.Unlock()
		return frame{}, cl.err
	}
	cl.nextID++
	id := cl.nextID
	cl.pending[id] = k
	cl.mu.Unlock()
	h := frameHeader(t, epoch, id, payload)
	cl.wmu.Lock()
	_, _ = cl.bw.Write(h[:])
	_, _ = cl.bw.Write(payload)
	err := cl.bw.Flush()
	cl.wmu.Unlock()
	if err != nil {
		cl.fail(err)
	}
	select {
	case <-k.done:
		return k.reply, k.err
	case <-ctx.Done():
		cl.mu.Lock()
		_, waiting := cl.pending[id]
		delete(cl.pending, id)
		cl.mu.Unlock()
		if !waiting {
			// The reply is being delivered into dst: let it finish, so
			// that the caller owns dst again when do returns.
			<-k.done
			return k.reply, k.err
		}
		return frame{}, fmt.Errorf("%s request to memory node: %w", t, ctx.Err())
	}
}

// expect checks a reply's type.
func expect(f frame, t msgType) error {
	if f.t != t {
		return fmt.Errorf("memory node answered with %s, want %s: %w", f.t, t, ErrProtocol)
	}
	return nil
}

func (cl *client) resolve(ctx context.Context, name string, claim bool, w WriterID) (regionInfo, uint64, error) {
	f, err := cl.do(ctx, tResolve, 0, appendResolve(nil, resolveReq{claim: claim, writer: w, name: name}), nil)
	if err == nil {
		err = expect(f, tRegion)
	}
	if err != nil {
		return regionInfo{}, 0, err
	}
	r, err := decodeRegion(f.payload)
	return r, f.epoch, err
}

func (cl *client) create(ctx context.Context, name string, size uint64) (regionInfo, uint64, error) {
	f, err := cl.do(ctx, tCreate, 0, appendCreate(nil, createReq{size: size, name: name}), nil)
	if err == nil {
		err = expect(f, tRegion)
	}
	if err != nil {
		return regionInfo{}, 0, err
	}
	r, err := decodeRegion(f.payload)
	return r, f.epoch, err
}

// read fills dst with the region's bytes at off.
func (cl *client) read(ctx context.Context, epoch uint64, region uint32, off uint64, dst []byte, prio uint8) error {
	for len(dst) > 0 {
		n := min(len(dst), MaxRead)
		f, err := cl.do(ctx, tRead, epoch, appendRead(nil, readReq{region: region, off: off, n: uint32(n), prio: prio}), dst[:n])
		if err == nil {
			err = expect(f, tData)
		}
		if err != nil {
			return err
		}
		dst, off = dst[n:], off+uint64(n)
	}
	return nil
}

// write sends runs as one batch and returns once they are durable on the
// node.
func (cl *client) write(ctx context.Context, epoch uint64, region uint32, runs []run) error {
	f, err := cl.do(ctx, tWrite, epoch, appendWrite(make([]byte, 0, writeSize(runs)), region, runs), nil)
	if err == nil {
		err = expect(f, tAck)
	}
	return err
}

func (cl *client) release(ctx context.Context, epoch uint64, region uint32) error {
	f, err := cl.do(ctx, tRelease, epoch, le.AppendUint32(nil, region), nil)
	if err == nil {
		err = expect(f, tAck)
	}
	return err
}

func (cl *client) status(ctx context.Context) (Status, error) {
	f, err := cl.do(ctx, tStatus, 0, nil, nil)
	if err == nil {
		err = expect(f, tStatusReply)
	}
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(f.payload, &s); err != nil {
		return Status{}, fmt.Errorf("memory node status: %w: %w", err, ErrProtocol)
	}
	return s, nil
}

func (cl *client) close() error {
	cl.fail(errors.New("closed"))
	return nil
}

// QueryStatus asks the memory node at addr for its status, over TLS
// unless cfg is nil.
func QueryStatus(ctx context.Context, addr string, cfg *tls.Config) (Status, error) {
	cl, err := dial(ctx, addr, cfg)
	if err != nil {
		return Status{}, err
	}
	defer cl.close()
	return cl.status(ctx)
}

// syncConn is a connection to a node used by one goroutine, one request
// at a time: the reply is read on the caller's goroutine, with no hand-off
// to a reader goroutine, which is what a fault's latency is made of.
type syncConn struct {
	c     net.Conn
	r     *frameReader
	id    uint64
	epoch uint64
	buf   []byte
}

// dialSync connects to the node at addr, over TLS unless cfg is nil, with
// a connection in blocking mode (see rawConn).
func dialSync(ctx context.Context, addr string, cfg *tls.Config) (*syncConn, error) {
	c, err := dialConn(ctx, addr, nil)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	if conn, err = newRawConn(c); err != nil {
		return nil, err
	}
	if cfg != nil {
		if conn, err = handshake(ctx, conn, addr, cfg); err != nil {
			return nil, err
		}
	}
	return &syncConn{c: conn, r: newFrameReader(conn)}, nil
}

// call sends a request and reads its reply by deadline. dst, if set,
// receives a data reply's bytes. Any error leaves the connection unusable.
func (sc *syncConn) call(deadline time.Time, t msgType, epoch uint64, payload, dst []byte) (frame, error) {
	sc.id++
	_ = sc.c.SetDeadline(deadline)
	sc.buf = appendFrame(sc.buf[:0], t, epoch, sc.id, payload)
	if _, err := sc.c.Write(sc.buf); err != nil {
		return frame{}, err
	}
	f, err := sc.r.next()
	if err != nil {
		return frame{}, err
	}
	sc.epoch = f.epoch
	switch {
	case f.id != sc.id:
		return frame{}, fmt.Errorf("reply %d to request %d: %w", f.id, sc.id, ErrProtocol)
	case f.t == tError:
		code, msg, err := decodeError(f.payload)
		if err != nil {
			return frame{}, err
		}
		sentinel := codeErr(code)
		return frame{}, fmt.Errorf("memory node: %s: %w", strings.TrimSuffix(msg, ": "+sentinel.Error()), sentinel)
	case dst != nil:
		if f.t != tData || len(f.payload) != len(dst) {
			return frame{}, fmt.Errorf("memory node sent %s of %d bytes for a read of %d: %w", f.t, len(f.payload), len(dst), ErrProtocol)
		}
		copy(dst, f.payload)
	}
	return f, nil
}

func (sc *syncConn) close() { sc.c.Close() }
