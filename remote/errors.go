package remote

import (
	"errors"

	"github.com/pmemgo/pmemgo"
)

var (
	// ErrNotFound is returned when the node holds no region of the name.
	ErrNotFound = errors.New("pmemgo/remote: no such region")

	// ErrExists is returned when creating a region whose name is taken.
	ErrExists = errors.New("pmemgo/remote: region exists")

	// ErrBusy is returned when claiming a region for writing that another
	// client holds.
	ErrBusy = errors.New("pmemgo/remote: region is claimed by another writer")

	// ErrStale is returned for a request that names a region by the id of
	// another node incarnation: the node restarted and the client must
	// resolve the name again.
	ErrStale = errors.New("pmemgo/remote: node restarted, region handle is stale")

	// ErrDenied is returned when the node's policy does not let the
	// client's identity read or write the region.
	ErrDenied = errors.New("pmemgo/remote: access denied by the memory node's policy")

	// ErrNodeFull is returned when creating a region the node has no room
	// for: its limit on regions or on their total size, or no space left
	// on its file system to reserve the region's pages.
	ErrNodeFull = errors.New("pmemgo/remote: memory node has no room for the region")

	// ErrNodeFailed is returned by a node when it could not serve a request
	// (an I/O error on its files).
	ErrNodeFailed = errors.New("pmemgo/remote: memory node failed the request")
)

// codeErr maps an error reply's code to its sentinel.
func codeErr(code uint16) error {
	switch code {
	case codeNotFound:
		return ErrNotFound
	case codeExists:
		return ErrExists
	case codeBusy:
		return ErrBusy
	case codeStale:
		return ErrStale
	case codeInvalid:
		return ErrProtocol
	case codeDenied:
		return ErrDenied
	case codeCorrupt:
		return pmemgo.ErrCorrupt
	case codeFull:
		return ErrNodeFull
	}
	return ErrNodeFailed
}

// errCode maps an error to the code a node replies with.
func errCode(err error) uint16 {
	for _, c := range []struct {
		err  error
		code uint16
	}{{ErrNotFound, codeNotFound}, {ErrExists, codeExists}, {ErrBusy, codeBusy}, {ErrStale, codeStale}, {ErrProtocol, codeInvalid}, {ErrDenied, codeDenied}, {pmemgo.ErrCorrupt, codeCorrupt}, {ErrNodeFull, codeFull}} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return codeInternal
}

// ErrAgentFailed is returned by a remote pool's Fence and Close once its
// fault agent died and no other could be started: faults are no longer
// served, and the pool must be opened again.
var ErrAgentFailed = errors.New("pmemgo/remote: fault agent failed")

// ErrMoved is returned when changing a pool's placement whose epoch is no
// longer the one the caller read: someone else moved it meanwhile.
var ErrMoved = errors.New("pmemgo/remote: placement changed meanwhile")
