package mirror

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// QueryStatus asks the replica server at addr for the status of its
// pools, over mutual TLS with cfg (as Options.TLS), or over plain TCP
// when cfg is nil, for a server run with Insecure.
func QueryStatus(ctx context.Context, addr string, cfg *tls.Config) ([]PoolStatus, error) {
	var st []PoolStatus
	err := query(ctx, addr, cfg, wire.TypeStatusRequest, wire.TypeStatus, 10*time.Second, &st)
	if err != nil {
		return nil, fmt.Errorf("status from %s: %w", addr, err)
	}
	return st, nil
}

// query sends a request of type req to the replica server at addr and
// decodes its JSON answer, of type resp, into out. Without a deadline in
// ctx, the exchange may take wait.
func query(ctx context.Context, addr string, cfg *tls.Config, req, resp wire.Type, wait time.Duration, out any) error {
	conn, err := dialStatus(ctx, addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	} else {
		conn.SetDeadline(time.Now().Add(wait))
	}
	if _, err := conn.Write(wire.AppendFrame(nil, req, 0, 0, nil)); err != nil {
		return err
	}
	f, err := wire.NewReader(conn).Next()
	if err != nil {
		return err
	}
	switch f.Type {
	case wire.TypeError:
		return remoteError(f)
	case resp:
	default:
		return protocolError("%s message in answer", f.Type)
	}
	return json.Unmarshal(f.Payload, out)
}

// ReadDirStatus reports the pools of a replica directory that no server is
// running on, from their journals, without changing anything.
func ReadDirStatus(dir string) ([]PoolStatus, error) {
	uuids, err := poolsIn(dir)
	if err != nil {
		return nil, err
	}
	var out []PoolStatus
	for _, u := range uuids {
		base := filepath.Join(dir, hex.EncodeToString(u[:]))
		r, _, err := readJournal(base, nil)
		if err != nil {
			return nil, err
		}
		f, _, _ := readFence(base, nil)
		r.seen = max(r.seen, f.seen)
		out = append(out, PoolStatus{
			Pool: filepath.Base(base), Path: base + ".pool", Epoch: r.epoch, Seq: r.seq,
			SeenEpoch: r.seen, Head: r.seq, State: "stopped",
		})
	}
	slices.SortFunc(out, func(a, b PoolStatus) int { return strings.Compare(a.Pool, b.Pool) })
	return out, nil
}
