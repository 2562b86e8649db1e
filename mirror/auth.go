package mirror

import (
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// Policy says what each peer of a replica server with TLS may do. A
// peer's identity is the common name of its verified certificate (pmemctl
// cert issue sets it to the node's name). The zero Policy lets every peer
// with a certificate signed by a CA of ServerOptions.TLS.ClientCAs act as
// the primary of any pool and read the status.
type Policy struct {
	// Primaries, if not nil, lists the identities that may act as a
	// primary, each with the pools (UUIDs) it may replicate: an empty list
	// means every pool. Any other identity is refused.
	Primaries map[string][][16]byte
	// Status, if not nil, lists the identities that may read the server's
	// status. Any other identity is refused.
	Status []string
}

func (p Policy) isZero() bool { return p.Primaries == nil && p.Status == nil }

// MayReplicate reports whether identity id may act as the primary of the
// pool with the given UUID.
func (p Policy) MayReplicate(id string, pool [16]byte) bool {
	if id == "" {
		return false
	}
	if p.Primaries == nil {
		return true
	}
	pools, ok := p.Primaries[id]
	return ok && (len(pools) == 0 || slices.Contains(pools, pool))
}

// MayReadStatus reports whether identity id may read the server's status.
func (p Policy) MayReadStatus(id string) bool {
	return id != "" && (p.Status == nil || slices.Contains(p.Status, id))
}

// authorize checks that the peer of identity id may do what its first
// message f asks. Without TLS there is no identity and no check: the
// operator chose a network where every peer is trusted.
func (s *Server) authorize(id string, f wire.Frame) error {
	if s.opts.TLS == nil {
		return nil
	}
	switch f.Type {
	case wire.TypeStatusRequest, wire.TypeScrubRequest:
		// A scrub reads every pool the server holds: it needs the right
		// to see them, the status right.
		if !s.opts.Policy.MayReadStatus(id) {
			return fmt.Errorf("identity %q may not read status or scrub: %w", id, ErrUnauthorized)
		}
	case wire.TypeHello:
		h, err := wire.DecodeHello(f.Payload)
		if err != nil {
			return err
		}
		if !s.opts.Policy.MayReplicate(id, h.UUID) {
			return fmt.Errorf("identity %q may not replicate pool %s: %w", id, hex.EncodeToString(h.UUID[:]), ErrUnauthorized)
		}
	}
	return nil
}
