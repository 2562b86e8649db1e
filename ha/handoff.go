package ha

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pmemgo/pmemgo"
)

// ErrHandoff is returned when a standby refuses a handoff: another pool,
// an epoch or batch its replica does not hold, a pool whose hash differs
// from the saved one. The standby keeps its last complete state.
var ErrHandoff = errors.New("pmemgo/ha: handoff refused")

// Handoff is what a guardian tells the standby once it saved the pool:
// the replica holds batch Seq of epoch Epoch, and the pool file's xxhash64
// is Hash. A handoff with Aborted set says the save did not complete
// (the budget ran out): the standby promotes from its last complete state.
type Handoff struct {
	Pool  string `json:"pool"`
	UUID  string `json:"uuid"`
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
	Hash  uint64 `json:"hash"`
	// NoHash says that the guardian did not hash the pool (a save that
	// shipped only the chunks the primary's dirty-chunk record lists):
	// the standby does not check Hash.
	NoHash bool `json:"no_hash,omitempty"`
	// Sealed says that the pool is sealed (encrypted): the guardian's
	// file and the replica hold different records (other nonces) of the
	// same lines, so no file hash is sent. Digest is then the keyed
	// digest of the saved lines (device.SealedDigestOf), which the
	// standby compares, with the pool key, with the replica's when it
	// promotes.
	Sealed bool   `json:"sealed,omitempty"`
	Digest uint64 `json:"digest,omitempty"`
	// Bytes is what the save shipped; Save how long it took.
	Bytes int64         `json:"bytes"`
	Save  time.Duration `json:"save_ns"`
	// Aborted says why the save did not complete, if it did not.
	Aborted string `json:"aborted,omitempty"`
}

// handoffReply is the standby's answer.
type handoffReply struct {
	Error string `json:"error,omitempty"`
}

// maxHandoff bounds a handoff message, read before anything else.
const maxHandoff = 4 << 10

// SendHandoff sends msg to the standby's handoff address over TLS and
// waits for its answer: nil once it accepted, an error wrapping
// ErrHandoff with its reason when it refused.
func SendHandoff(ctx context.Context, addr string, cfg *tls.Config, msg Handoff) error {
	if cfg == nil {
		return fmt.Errorf("ha: handoff to %s: no TLS configuration: %w", addr, pmemgo.ErrInvalidOptions)
	}
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("ha: handoff to %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("ha: handoff to %s: %w", addr, err)
	}
	var reply handoffReply
	if err := readJSONLine(c, &reply); err != nil {
		return fmt.Errorf("ha: handoff to %s: no answer: %w", addr, err)
	}
	if reply.Error != "" {
		return fmt.Errorf("ha: handoff to %s: standby says: %s: %w", addr, reply.Error, ErrHandoff)
	}
	return nil
}

// readJSONLine reads one bounded line of JSON into v.
func readJSONLine(r io.Reader, v any) error {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxHandoff), maxHandoff).ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("message of more than %d bytes or cut short: %w", maxHandoff, err)
	}
	return json.Unmarshal(line, v)
}

// serveHandoffs accepts handoffs on l until it is closed, passing each to
// check, which says whether it is accepted, and sending check's answer.
func serveHandoffs(l net.Listener, cfg *tls.Config, timeout time.Duration, check func(Handoff) error) {
	// As the replica server: TLS 1.3, and a client certificate that the
	// configuration's CAs signed.
	cfg = cfg.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	for {
		raw, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			c := tls.Server(raw, cfg)
			defer c.Close()
			c.SetDeadline(time.Now().Add(timeout))
			var msg Handoff
			var reply handoffReply
			if err := readJSONLine(c, &msg); err != nil {
				reply.Error = fmt.Sprintf("bad handoff message: %v", err)
			} else if err := check(msg); err != nil {
				// The sender wraps ErrHandoff itself.
				reply.Error = strings.TrimSuffix(err.Error(), ": "+ErrHandoff.Error())
			}
			b, _ := json.Marshal(reply)
			c.Write(append(b, '\n'))
		}()
	}
}

// hashFile returns the xxhash64 of a file's content.
func hashFile(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	d := xxhash.New()
	if _, err := io.Copy(d, f); err != nil {
		return 0, err
	}
	return d.Sum64(), nil
}
