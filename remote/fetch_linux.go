package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// fetcher is one worker's connection to the node.
type fetcher struct {
	sc     *syncConn
	epoch  uint64
	region uint32
}

// connect dials the node and resolves the region.
func (f *fetcher) connect(a *agent, deadline time.Time) error {
	f.close()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	sc, err := dialSync(ctx, a.cfg.Addr, a.tls)
	if err != nil {
		return err
	}
	fr, err := sc.call(deadline, tResolve, 0, appendResolve(nil, resolveReq{name: a.cfg.Name}), nil)
	var r regionInfo
	if err == nil {
		if err = expect(fr, tRegion); err == nil {
			r, err = decodeRegion(fr.payload)
		}
	}
	if err == nil && r.size != a.cfg.Region {
		err = fmt.Errorf("region %s is %d bytes, not %d", a.cfg.Name, r.size, a.cfg.Region)
	}
	if err != nil {
		sc.close()
		return err
	}
	f.sc, f.epoch, f.region = sc, fr.epoch, r.id
	return nil
}

// read fetches one page by deadline, connecting first if needed. Any
// failure drops the connection: a late reply must not be taken for the
// next request's.
func (f *fetcher) read(a *agent, off uint64, buf []byte, deadline time.Time) error {
	reused := f.sc != nil
	if !reused {
		if err := f.connect(a, deadline); err != nil {
			return err
		}
	}
	_, err := f.sc.call(deadline, tRead, f.epoch, appendRead(nil, readReq{region: f.region, off: off, n: uint32(len(buf)), prio: prioDemand}), buf)
	// The node restarted (its regions have new handles), or it closed the
	// connection, which it does to one left idle (NodeOptions.IdleTimeout):
	// one new connection, and the request again.
	if errors.Is(err, ErrStale) || reused && closedByPeer(err) {
		if err = f.connect(a, deadline); err == nil {
			_, err = f.sc.call(deadline, tRead, f.epoch, appendRead(nil, readReq{region: f.region, off: off, n: uint32(len(buf)), prio: prioDemand}), buf)
		}
	}
	if err != nil {
		f.close()
	}
	return err
}

// closedByPeer reports whether err says the peer closed the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

func (f *fetcher) close() {
	if f.sc != nil {
		f.sc.close()
		f.sc = nil
	}
}
