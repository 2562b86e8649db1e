package remote

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pmemgo/pmemgo"
)

// srvConn is one client connection.
type srvConn struct {
	n     *Node
	c     net.Conn
	wmu   sync.Mutex
	bw    *bufio.Writer
	slots chan struct{}
	// identity is the common name of the client's verified certificate.
	identity string
	// claims counts the regions whose write claim the connection holds.
	claims atomic.Int32
	// idleMu orders the idle deadline's updates: by the connection's
	// goroutine before each request, by a worker after each queued one.
	// armed is set while a deadline is set, so that a connection that
	// holds a claim lifts it once rather than at every request.
	idleMu sync.Mutex
	armed  bool
}

func (c *srvConn) serve() {
	defer c.n.wg.Done()
	defer c.drop()
	if tc, ok := c.c.(*tls.Conn); ok {
		// A peer that never finishes its handshake must not hold a
		// connection slot for ever.
		_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			c.n.opts.Logger.Warn("memory node: TLS handshake failed", "remote", c.c.RemoteAddr(), "err", err)
			return
		}
		_ = tc.SetDeadline(time.Time{})
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			c.identity = st.PeerCertificates[0].Subject.CommonName
		}
	}
	r := newFrameReader(c.c)
	for {
		c.setIdleDeadline()
		f, err := r.next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.n.opts.Logger.Info("memory node: idle connection closed", "remote", c.c.RemoteAddr(), "idle_timeout", c.n.opts.IdleTimeout)
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.n.opts.Logger.Warn("memory node: connection dropped", "remote", c.c.RemoteAddr(), "err", err)
				c.reply(tError, f.id, appendError(nil, errCode(err), err.Error()))
			}
			return
		}
		switch f.t {
		case tRead, tWrite:
			low := f.t == tWrite || (len(f.payload) == readSize && f.payload[16] == prioPrefetch)
			// A demand read that finds no other waiting is served here:
			// a hand-off to a worker costs a fault tens of microseconds.
			if !low && c.n.q.tryInline(c.n.opts.Workers) {
				c.handleQueued(f)
				c.n.q.doneInline()
				continue
			}
			f.payload = append([]byte(nil), f.payload...)
			c.slots <- struct{}{}
			c.n.q.push(job{c: c, f: f, low: low})
		default:
			c.handleInline(f)
		}
	}
}

// setIdleDeadline bounds the wait for the next request by the idle
// timeout while the connection holds no claim and no request of its is
// being served; otherwise it lifts the bound. The bound covers the whole
// next frame, so one that trickles in slower than that is cut off too.
func (c *srvConn) setIdleDeadline() {
	idle := c.n.opts.IdleTimeout
	if idle < 0 {
		return
	}
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	switch {
	case c.claims.Load() == 0 && len(c.slots) == 0:
		_ = c.c.SetReadDeadline(time.Now().Add(idle))
		c.armed = true
	case c.armed:
		_ = c.c.SetReadDeadline(time.Time{})
		c.armed = false
	}
}

// allowed checks the node's policy for the connection's identity.
// Writes need no check of their own: they need the write claim, which
// needs write access.
func (c *srvConn) allowed(name string, write bool) error {
	if c.n.opts.Policy.allows(c.identity, name, write) {
		return nil
	}
	what := "read"
	if write {
		what = "write"
	}
	return fmt.Errorf("client %q may not %s region %s: %w", c.identity, what, name, ErrDenied)
}

// operator checks that the policy lets the connection's identity read
// every region, as what it asks for (what) needs.
func (c *srvConn) operator(what string) error {
	if c.n.opts.Policy.allows(c.identity, "*", false) {
		return nil
	}
	return fmt.Errorf("client %q may not %s: the policy does not let it read every region (\"*\"): %w", c.identity, what, ErrDenied)
}

// drop closes the connection and releases the claims it held.
func (c *srvConn) drop() {
	c.c.Close()
	c.n.mu.Lock()
	delete(c.n.conns, c)
	regions := append([]*region(nil), c.n.byID...)
	c.n.mu.Unlock()
	for _, r := range regions {
		r.release(c)
	}
}

// handleInline answers the requests that need no queue.
func (c *srvConn) handleInline(f frame) {
	var r *region
	var err error
	switch f.t {
	case tResolve:
		var req resolveReq
		if req, err = decodeResolve(f.payload); err == nil {
			if err = c.allowed(req.name, req.claim); err == nil {
				if r, err = c.n.byName(req.name); err == nil && req.claim {
					err = r.claim(c, req.writer)
				}
			}
		}
	case tCreate:
		var req createReq
		if req, err = decodeCreate(f.payload); err == nil {
			if err = c.allowed(req.name, true); err == nil {
				r, err = c.n.create(req)
			}
		}
	case tRelease:
		if len(f.payload) != 4 {
			err = fmt.Errorf("release of %d bytes: %w", len(f.payload), ErrProtocol)
		} else if r, err = c.n.lookup(f.epoch, le.Uint32(f.payload)); err == nil {
			r.release(c)
			c.reply(tAck, f.id, nil)
			return
		}
	case tStatus:
		// The status names every region and its last writer, and a scrub
		// reads every region: under a policy, only an identity that may
		// read them all (an operator's) may ask for either.
		if err = c.operator("read the node's status"); err != nil {
			break
		}
		b, _ := json.Marshal(c.n.Status())
		c.reply(tStatusReply, f.id, b)
		return
	case tScrub:
		if err = c.operator("scrub the node"); err != nil {
			break
		}
		var b []byte
		if b, err = c.n.scrubReply(); err == nil {
			c.reply(tStatusReply, f.id, b)
			return
		}
	default:
		err = fmt.Errorf("unexpected %s frame from a client: %w", f.t, ErrProtocol)
	}
	if err != nil {
		c.reply(tError, f.id, appendError(nil, errCode(err), err.Error()))
		return
	}
	r.mu.Lock()
	info := regionInfo{id: r.id, size: r.size, lastWriter: r.lastWriter}
	r.mu.Unlock()
	c.reply(tRegion, f.id, appendRegion(nil, info))
}

// handleQueued serves a read or a write-back taken from a queue.
func (c *srvConn) handleQueued(f frame) {
	if f.t == tRead {
		req, err := decodeRead(f.payload)
		var r *region
		var b []byte
		if err == nil {
			if r, err = c.n.lookup(f.epoch, req.region); err == nil {
				if err = c.allowed(r.name, false); err == nil {
					b, err = r.read(req.off, req.n)
				}
			}
		}
		if errors.Is(err, pmemgo.ErrCorrupt) {
			c.n.damaged.Add(1)
			c.n.opts.Logger.Error("memory node: damaged page refused", "err", err)
		}
		if err != nil {
			c.reply(tError, f.id, appendError(nil, errCode(err), err.Error()))
			return
		}
		c.n.reads.Add(1)
		c.n.bytesRead.Add(uint64(len(b)))
		c.reply(tData, f.id, b)
		return
	}
	if err := c.write(f); err != nil {
		c.reply(tError, f.id, appendError(nil, errCode(err), err.Error()))
		return
	}
	c.n.writes.Add(1)
	c.n.bytesWritten.Add(uint64(len(f.payload)))
	c.reply(tAck, f.id, nil)
}

// write applies a write-back batch, durably, if c holds the region's
// write claim.
func (c *srvConn) write(f frame) error {
	if f.epoch != c.n.epoch {
		return fmt.Errorf("write for node incarnation %#x, this is %#x: %w", f.epoch, c.n.epoch, ErrStale)
	}
	var r *region
	_, runs, err := decodeWrite(f.payload, func(id uint32) (uint64, bool) {
		var lerr error
		r, lerr = c.n.lookup(f.epoch, id)
		if lerr != nil {
			return 0, false
		}
		return r.size, true
	})
	if err != nil {
		return err
	}
	return r.write(c, runs)
}

// reply sends one frame; a failed send closes the connection, which ends
// its reader.
func (c *srvConn) reply(t msgType, id uint64, payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := frameHeader(t, c.n.epoch, id, payload)
	_, _ = c.bw.Write(h[:])
	_, _ = c.bw.Write(payload)
	if err := c.bw.Flush(); err != nil {
		c.c.Close()
	}
}
