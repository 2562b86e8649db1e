// Package ha makes a replicated pool survive its primary: who is primary
// is decided by a coordinator, never by ha itself, and each primary term
// gets a fencing token that becomes the pool's epoch for the mirror.
//
// # Coordinators
//
// A Coordinator runs an election with a lease per pool. LeaseFile is for
// the processes of one machine (a lease file per pool beside the pools,
// an flock ordering its readers and writers, the token a counter bumped
// at each grant); Etcd is for nodes on several machines (an etcd lease
// and the concurrency election; the token is the revision at which the
// winner's key was created). Both grant tokens that only grow.
//
// # Fencing
//
// Campaign returns a Term. Its validity is the start of the last renewal
// plus the lease's TTL, less a margin: a lease expires at the coordinator
// no earlier than the start of its renewal plus the TTL, so a heap bound
// to the term (Term.Fence, heap.SetLeaseDeadline) stops committing, with
// pmemgo.ErrFenced, at least the margin before the coordinator can grant
// the role to another node. The margin covers a commit in flight: Update
// checks the deadline when it starts and again before its commit writes.
// The check is a clock read, so the steady state costs nothing more;
// renewals run in the background.
//
// The token is the mirror's epoch (mirror.Options.Epoch), so replicas
// refuse an older primary with mirror.ErrStaleEpoch. A new primary
// registers its term as the pool's incarnation (Term.Register) before
// its first commit, and StartPrimary refuses a pool whose epoch is older
// than the registered incarnation: a primary that comes back with its own
// copy after another took over does not hold that one's acknowledged
// commits, and its snapshot must not replace them on the replicas.
//
// # Power-loss saves
//
// StartPrimary keeps a record beside the pool (its path plus ".dirty"),
// a file mapped shared, so that it survives the process: for each 256 KiB
// chunk, the batch that last changed it, marked pending before the heap
// changes any byte of it (heap.OnWrite) and given the batch's number when
// the mirror captures it; with the pool's UUID and size, the epoch, the
// batch every replica acknowledged, the undo log generation it expects
// and the machine's boot id, the header checksummed. A Guard reads it
// before opening the pool and, when the standby holds a batch of that
// epoch no older than the acknowledged one, ships only the chunks marked
// after the standby's batch plus the metadata that open and close write
// unmarked (mirror.Options.Base): no pass over the pool on either side.
// A record that is missing, damaged, of another pool, size or boot, or
// that a pool written since without one contradicts (its log generation
// moved), a pool mapped at a new base, or a standby that does not hold
// the base, makes the save find the changes by hashing, as it would
// without a record, and the reason is logged and reported
// (SaveReport.Fallback). The handoff of a listed save carries no pool
// hash, since hashing the pool is what it avoids; GuardOptions.Verify
// keeps the check.
//
// # Sealed pools
//
// A sealed pool (heap.Options.Key) is saved and promoted with its key in
// GuardOptions.Key and StandbyOptions.Key; the replica server stores its
// sealed file and never uses the key. Its dirty-chunk record marks the
// chunks of the sealed file that hold the records of the lines changed,
// and the guardian reads the pool header and log word through the key.
// The guardian's file and the replica hold different records of the same
// lines, so the handoff carries the keyed digest of the saved lines
// instead of a file hash, and the standby checks it when it promotes,
// after checking every record with the key: the replica's lines must
// match an exact digest record of the batch its journal holds.
//
// # Limits
//
// A term's validity is measured on this machine's monotonic clock against
// a lease counted by the coordinator: a clock that runs more than the
// margin slow over a TTL breaks the guarantee. LeaseFile compares wall
// clock times between processes of one machine, and treats a holder
// whose PID no longer exists as gone (a PID reused within the TTL delays
// the takeover until the lease runs out). An incarnation registered by a
// primary whose replicas are all lost cannot be replaced without an
// operator. The dirty-chunk record does not see stores made outside any
// transaction (as snapshots and the undo log do not); free memory that a
// rolled-back transaction had allocated and written may differ on the
// standby, which Verify reports though the pools' content is the same;
// and a pool written by a process that kept no record is detected by its
// undo log's generation, except when the recording process was killed
// before its last one or two stores of the generation word reached the
// file (one store on a shared mapping; up to a commit's fence on a
// device that buffers stores, a sealed pool's) and the other process then
// only recovered the pool and committed as many times.
package ha
