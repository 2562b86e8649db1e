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
	// ErrLimit is returned by a replica server to a peer that exceeds one
	// of its limits (ServerOptions): connections, pools, pool size, memory
	// in flight, frame size, or an epoch further ahead of the one it has
	// seen than MaxEpochJump.
	ErrLimit = errors.New("pmemgo/mirror: replica server limit exceeded")

	// ErrDiverged is returned when a replica's history is not the
	// primary's: it holds a batch of the primary's epoch that the primary
	// did not make, or a batch does not follow the replica's on the chain.
	// Both sides stop; an operator resets the replica's fencing
	// (pmemctl replica reset-fencing) for it to be sent a new copy.
	ErrDiverged = errors.New("pmemgo/mirror: replica history diverges from the primary's")

	// ErrUnavailable is returned by a replica server for a pool it set
	// aside: the pool failed to open at start, or its fencing state is
	// lost. It stays so until an operator repairs it.
	ErrUnavailable = errors.New("pmemgo/mirror: replica pool set aside")
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
	case wire.CodeUnauthorized:
		return ErrUnauthorized
	case wire.CodeLimit:
		return ErrLimit
	case wire.CodeDiverged:
		return ErrDiverged
	case wire.CodeUnavailable:
		return ErrUnavailable
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
		return wire.CodeUnauthorized
	case errors.Is(err, ErrLimit), errors.Is(err, wire.ErrTooLarge):
		return wire.CodeLimit
	case errors.Is(err, ErrDiverged):
		return wire.CodeDiverged
	case errors.Is(err, ErrUnavailable):
		return wire.CodeUnavailable
	case errors.Is(err, ErrProtocol), errors.Is(err, wire.ErrVersion):
		return wire.CodeProtocol
	}
	return wire.CodeIO
}

// protocolError returns an ErrProtocol error saying what went wrong.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrProtocol)
}

// divergedError returns an ErrDiverged error saying where.
func divergedError(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrDiverged)
}

// limitError returns an ErrLimit error saying which.
func limitError(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrLimit)
}
