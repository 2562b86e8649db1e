package mirror

import (
	"errors"
	"fmt"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

var (
	// ErrStaleEpoch is returned when a replica refuses a primary whose
	// epoch is older than one the replica has seen for the pool: a newer
	// incarnation of the primary exists. The primary's mirror stops
	// replicating to that replica.
	ErrStaleEpoch = errors.New("pmemgo/mirror: primary epoch is older than one the replica has seen")

	// ErrAckTimeout is returned by a commit in sync mode (through
	// heap.Update) when fewer replicas than Options.Acks acknowledged it
	// within Options.AckTimeout. The commit stands on the primary.
	ErrAckTimeout = errors.New("pmemgo/mirror: replicas did not acknowledge the commit in time")

	// ErrProtocol is returned when a peer sends a message that is out of
	// place or inconsistent with the session: a batch out of sequence, an
	// offset outside the pool, an epoch that changed mid-session.
	ErrProtocol = errors.New("pmemgo/mirror: protocol violation")

	// ErrBusy is returned by a replica server to a primary when another
	// primary is replicating the same pool.
	ErrBusy = errors.New("pmemgo/mirror: pool is being replicated by another primary")

	// ErrWrongPool is returned when a replica holds a pool of the same
	// UUID but another size.
	ErrWrongPool = errors.New("pmemgo/mirror: replica holds a different pool")

	// ErrReplicaIO is returned to a primary when the replica could not
	// store what it was sent.
	ErrReplicaIO = errors.New("pmemgo/mirror: replica failed to store data")

	// ErrClosed is returned when using a Mirror or Server after Close.
	ErrClosed = errors.New("pmemgo/mirror: closed")

	// ErrInsecure is returned by Start and NewServer when neither TLS nor
	// Insecure is set, and by Server.Serve when a server without TLS would
	// listen on every interface.
	ErrInsecure = errors.New("pmemgo/mirror: plain TCP not explicitly allowed")

	// ErrUnauthorized is returned to a peer, and logged by the server, when
	// the identity of its certificate may not do what it asked: replicate
	// that pool, or read the status (ServerOptions.Policy).
	ErrUnauthorized = errors.New("pmemgo/mirror: peer not authorized")
)

// RemoteError is an error a peer reported before closing the connection.
// It unwraps to the sentinel matching its code: ErrStaleEpoch, ErrBusy,
// wire.ErrCorrupt and so on.
type RemoteError struct {
	Code    uint16
	Message string
}

func (e *RemoteError) Error() string { return "peer reported: " + e.Message }

// Unwrap returns the sentinel for the error's code.
func (e *RemoteError) Unwrap() error {
	switch e.Code {
	case wire.CodeStaleEpoch:
		return ErrStaleEpoch
	case wire.CodeBusy:
		return ErrBusy
	case wire.CodeCorrupt:
		return wire.ErrCorrupt
	case wire.CodeIO:
		return ErrReplicaIO
	case wire.CodeWrongPool:
		return ErrWrongPool
	case codeUnauthorized:
		return ErrUnauthorized
	}
	return ErrProtocol
}

// errorCode returns the wire code that reports err to a peer.
func errorCode(err error) uint16 {
	switch {
	case errors.Is(err, ErrStaleEpoch):
		return wire.CodeStaleEpoch
	case errors.Is(err, ErrBusy):
		return wire.CodeBusy
	case errors.Is(err, wire.ErrCorrupt), errors.Is(err, wire.ErrTruncated):
		return wire.CodeCorrupt
	case errors.Is(err, ErrWrongPool):
		return wire.CodeWrongPool
	case errors.Is(err, ErrUnauthorized):
		return codeUnauthorized
	case errors.Is(err, ErrProtocol), errors.Is(err, wire.ErrVersion):
		return wire.CodeProtocol
	}
	return wire.CodeIO
}

// protocolError returns an ErrProtocol error saying what went wrong.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrProtocol)
}
