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
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if cfg != nil {
		cfg = cfg.Clone()
		cfg.MinVersion = tls.VersionTLS13
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with memory node %s: %w", addr, err)
		}
		c = tc
	}
	cl := &client{c: c, bw: bufio.NewWriterSize(c, 64<<10), pending: map[uint64]*call{}, done: make(chan struct{})}
	go cl.readLoop()
	return cl, nil
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
