// Package pmemgo holds what every package of pmemgo shares: the errors a
// caller can test with errors.Is. The engine itself is in the heap package;
// see the README for an overview.
package pmemgo

import "errors"

var (
	// ErrNotPool is returned by Open when the file does not start with a
	// pmemgo pool header (wrong magic).
	ErrNotPool = errors.New("pmemgo: not a pool file")

	// ErrVersion is returned by Open when the pool's format version is not
	// one this build reads.
	ErrVersion = errors.New("pmemgo: unsupported pool format version")

	// ErrCorrupt is returned when metadata fails validation: a checksum
	// mismatch, an inconsistent field, a stored pointer outside the pool.
	// The wrapping error says what and where.
	ErrCorrupt = errors.New("pmemgo: pool is corrupt")

	// ErrTruncated is returned by Open when the file is shorter than the
	// size its header records.
	ErrTruncated = errors.New("pmemgo: pool file is truncated")

	// ErrTypeMismatch is returned when a registered Go type's layout differs
	// from the layout stored in the pool, or when an object is used as a
	// type it is not (a root of another type, for instance).
	ErrTypeMismatch = errors.New("pmemgo: type layout mismatch")

	// ErrUnsupportedType is returned when a Go type cannot be stored in a
	// pool: it contains a map, channel, func or interface, or has no size.
	ErrUnsupportedType = errors.New("pmemgo: type cannot be stored in a pool")

	// ErrNoSpace is returned by allocations when the pool has no room left.
	// The transaction is rolled back if the closure returns it.
	ErrNoSpace = errors.New("pmemgo: pool is out of space")

	// ErrInvalidOptions is returned by Open when an option cannot be
	// used: a pool size below the minimum, a slab size that is not a power
	// of two in range, an undo log that leaves no room for slabs. The
	// wrapping error names the option, its value and the limit.
	ErrInvalidOptions = errors.New("pmemgo: invalid options")

	// ErrTxTooLarge is returned when a transaction's undo log does not fit
	// in the pool's log region.
	ErrTxTooLarge = errors.New("pmemgo: transaction too large for the undo log")

	// ErrForeignPointer is returned by a commit when a persistent object
	// holds a pointer to memory outside the pool (Go heap memory, for
	// instance). The transaction is rolled back.
	ErrForeignPointer = errors.New("pmemgo: pointer to memory outside the pool")

	// ErrBadPointer is returned by a commit when a persistent object holds
	// a pointer into the pool that does not point at an allocated object of
	// its type: a freed object, the inside of an object, or an object of
	// another type. The transaction is rolled back.
	ErrBadPointer = errors.New("pmemgo: pointer to something other than an allocated object of its type")

	// ErrNotInPool is returned when an address handed to the heap (to log,
	// free or look up) does not lie inside the pool.
	ErrNotInPool = errors.New("pmemgo: address is not in the pool")

	// ErrInvalidFree is returned when freeing something that is not an
	// allocated object: a double free, or an address inside an object.
	ErrInvalidFree = errors.New("pmemgo: invalid free")

	// ErrTimeout is returned by Open when the pool's file lock could not be
	// taken within Options.Timeout: another process has it open.
	ErrTimeout = errors.New("pmemgo: timed out waiting for the pool lock")

	// ErrTxClosed is returned when a transaction is used after its closure
	// returned.
	ErrTxClosed = errors.New("pmemgo: transaction is closed")

	// ErrReadOnly is returned when writing in a View transaction or in a
	// pool opened read-only.
	ErrReadOnly = errors.New("pmemgo: read-only")

	// ErrNestedTx is returned by Update, View, their Context variants and
	// Close when the calling goroutine is already inside a transaction of
	// the same heap: waiting would deadlock. Finish the outer transaction
	// first, or do the work inside it with its Tx.
	ErrNestedTx = errors.New("pmemgo: transaction inside a transaction of the same heap")

	// ErrClosed is returned when using a pool after Close.
	ErrClosed = errors.New("pmemgo: pool is closed")

	// ErrNeedsRecovery is wrapped by the problems the offline checker
	// reports for a pool that a crash left needing recovery: a live undo
	// log, an interrupted swizzle, a header slot torn while the pool was
	// open. Open repairs them; they are not corruption.
	ErrNeedsRecovery = errors.New("pmemgo: pool needs recovery")

	// ErrFenced is returned by Update (and Batch) when this process is no
	// longer known to be the primary of the pool: the lease that its
	// coordinator granted (package ha) ran out, or was lost, or the
	// fencing token offered as the pool's epoch is not above the epoch the
	// pool already has. Nothing is committed; the pool is unchanged.
	ErrFenced = errors.New("pmemgo: fenced: not the primary of the pool")
)

// ErrBadKey is returned when a pool key does not fit the pool: a sealed
// (encrypted) pool opened without its key or with another one, a key given
// for a pool that is not sealed, or a key that is not 32 bytes.
var ErrBadKey = errors.New("pmemgo: wrong or missing pool key")
