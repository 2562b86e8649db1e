// Package mirror replicates a pool to replica servers, line by line, so
// that a pool lost with its machine survives on another one.
//
// # Pieces
//
// A Tracker records which 64-byte lines of a set of pages a device wrote
// back; every device reports its write-backs, so it works whichever device
// maps the pool. A Mirror tracks the whole pool and, at commit boundaries
// (heap.OnCommit, run under the heap's writer lock, once the commit is
// durable), captures the lines written back since the previous capture,
// with their content read from the pool then, as one batch. Batches go to
// each replica over TCP in the protocol of package wire. A Server keeps, for
// each pool, a pool file named by the pool's UUID and applies each batch
// atomically: the batch is written to a journal and made durable, then
// applied to the pool file and made durable, then acknowledged. A crash of
// the server between the two is finished at its next start, which redoes
// the journaled batch. The pool file is therefore, whenever the server is
// stopped, the primary's state after some commit: it passes the offline
// check and opens with the heap API.
//
// Everything written back between two captures is in the next batch,
// writes outside transactions included (the open mark, header writes), so
// applying batches in order reproduces the primary's pool byte for byte.
//
// # Modes
//
// In Sync mode every commit is captured in its own hook, sent, and the
// hook (so heap.Update) returns once Options.Acks replicas acknowledged it:
// an acknowledged commit survives the loss of the primary.
//
// In Async mode the hook captures only when a replica is ready for more
// (or a bound is reached); between captures the dirty lines accumulate in
// the tracker, so a line rewritten by several commits is read and sent
// once, with its content at the capture's boundary: hot lines coalesce.
// A batch holds the content of its lines at its commit boundary, which is
// what keeps a replica at the state of some commit rather than a mix of
// two. When a replica is waiting for it, the capture does not read it:
// it opens a heap snapshot limited to the batch's lines, so that a later
// commit that changes one of them first keeps its old 64-byte line, and
// the goroutine sending the batch reads it, kept lines included, while
// commits go on; closing the snapshot frees what it kept. Past
// Options.KeepBytes of kept lines, the batch is read on the committing
// goroutine before the line changes, as every batch is in Sync mode, for
// sealed pools and without KeepBytes, the default (metrics
// pmemgo_mirror_lazy_batches_total, pmemgo_mirror_kept_lines_total and
// pmemgo_mirror_keep_fallbacks_total count these). When lines wait and no commit comes within
// Options.FlushDelay, the mirror makes a boundary itself with an empty
// Update. A commit waits (back-pressure) while a streaming replica lags
// more than Options.MaxLagBytes or Options.MaxLagTime.
//
// # Epochs and catch-up
//
// Start makes the pool a new incarnation (heap.NewEpoch, or with
// Options.Epoch a coordinator's fencing token: package ha); every message
// carries its epoch and a replica refuses a primary older than one it has
// seen for the pool (ErrStaleEpoch, on both sides). While a primary is
// connected, a hello of a newer epoch takes its session over (the old
// primary's machine may have died without closing it), and so does one of
// the same epoch from the same TLS identity: the primary reconnecting
// after a failure the server has not noticed, which would otherwise wait
// out the server's idle timeout. Another identity, or any peer over plain
// TCP, presenting the connected epoch is refused (ErrBusy). A replica that
// connects reports the epoch and batch its pool file holds; the primary
// resends the batches after it if it still holds them (Options.RetainBytes)
// and else sends a snapshot: a heap.Snapshot taken at the commit boundary
// of a capture (batch B), so a consistent image of that commit however
// commits go on while it is sent, kept by copy-on-write of the 64-byte
// lines they change. The replica installs the copy as its pool file once
// it has applied batch B+1 on top of it. A replica that holds a copy of the pool written by an
// earlier epoch (a primary restart starts a new epoch, without history)
// sends the hashes of its copy's 256 KiB chunks with its answer to hello,
// and the snapshot carries only the chunks whose content differs: the
// replica starts the copy from its own file. (A replica of the primary's
// own epoch that missed more than was retained gets a full snapshot.)
// A primary that knows which chunks changed since some batch of an
// older epoch (Options.Base: a guardian saving a dead application's pool
// from its dirty-chunk record, package ha) says so in its hello; a
// replica that holds that batch or a later one sends no hashes, and is
// sent a listed snapshot: only the chunks marked after its batch, and
// those the primary's own batches changed. The replica writes them into
// its journal as they come, as one batch record (up to wire.MaxListed
// bytes), and applies them to its pool file in place, through that
// record, with batch B+1: neither side reads the rest of the pool.
//
// # Growth
//
// A pool may grow while its mirror runs (heap.Grow, or an allocation that
// finds no room). The mirror's tracker follows the growth
// (device.GrowthFollower): it tracks the new part before anything is
// written there, and batches captured from then on record the new size.
// A session whose replica said hello at a smaller size sends the batches
// captured before the growth, then reconnects; its hello says the new size,
// and the server grows its copy (allocated and synced; a pool file longer
// than its header says is a valid pool) and, in the same epoch, resumes
// where it was. A replica whose copy is smaller than the pool of a new
// epoch says no position and gets a whole snapshot.
//
// # Security
//
// Primaries and servers talk over mutual TLS 1.3 (Options.TLS,
// ServerOptions.TLS): the server requires a client certificate signed by
// a CA of its ClientCAs, the primary checks the server's certificate for
// the host it dials. A peer's identity is the common name of its verified
// certificate, and ServerOptions.Policy says which identities may be the
// primary of which pools and read the status; by default any certificate
// the CA signed may do both. A refused peer is sent ErrUnauthorized and
// logged, and the server goes on. Plain TCP needs Insecure, logs a
// warning, and a server without TLS refuses to listen on every interface
// (ErrInsecure). crypto/tls writes each record of 16 KiB at most with a
// system call of its own: the primary gathers the records of a large
// frame, or of the frames it sends at once, into writes of up to 256 KiB,
// and the server reads through a buffer of 64 KiB.
//
// # Chain and fencing
//
// Each batch carries the chain value after the batch before it (a running
// hash: SHA-256 of the epoch, sequence number and xxhash64 of each batch's
// payload, which starts with the previous value), as Raft's entries carry
// the term of the previous one. A
// replica applies a batch only on top of its own newest one, and its
// acknowledgement carries the chain value after the batch, so a sync commit
// returns only once a replica holds exactly that batch on this primary's
// chain. A replica that connects shows a tag of its chain value; the
// primary resumes only where the tag is that of its own batch. A history
// that diverges (a batch of the primary's epoch that the primary did not
// make) is refused on both sides with ErrDiverged.
//
// The fencing state of each pool (the newest epoch seen, and the position
// of the pool file) is kept apart from the journal, in two checksummed
// copies, so that losing the journal does not let an older primary in:
// the pool is then only sent a whole copy. With both copies lost the pool
// is set aside until an operator resets it (ResetFencing, pmemctl replica
// reset-fencing), never reset to epoch 0. A primary whose epoch is further
// than ServerOptions.MaxEpochJump ahead of the newest seen is refused, so
// that one hello cannot lock the real primary out for good; a hello of the
// epoch of the session holding a pool does not take it over. A snapshot is
// never installed below the replica's batch in its epoch, nor unless every
// chunk arrived and the copy has a valid header of the pool.
//
// # What a client can make a server spend
//
// Every message type bounds its payload, checked from the header before
// anything is read or allocated, and a frame's buffer grows only as its
// bytes arrive, charged to ServerOptions.MaxMemory over all connections.
// The server caps connections, pools and pool size, ends sessions silent
// for ServerOptions.IdleTimeout (primaries ping every Options.Heartbeat),
// retries accept errors such as EMFILE with a backoff, holds a pool's
// files open only while a session uses it, reserves disk space with
// fallocate before it writes a mapped file (and turns a fault writing the
// mapping into an error), verifies each pool at start and on Scrub, and
// sets aside a pool that fails to open while serving the others.
//
// What remains: a peer whose certificate the policy allows as the primary
// of a pool, presenting a newer epoch than the replica's within
// MaxEpochJump, fences the real primary out until it restarts and receives
// the hashes of the replica's chunks (ServerOptions.NoChunkHashes turns
// them off, at the cost of whole snapshots). With Insecure (plain TCP) any
// peer that reaches the server can do so and create pools up to the caps,
// and a peer that watched a session knows the chain value and can extend
// the history while the primary is away; the primary then detects the
// divergence, but the replica's content is the peer's until an operator
// resets it.
//
// # Sealed pools
//
// A pool opened with a key (heap.Options.Key) is replicated as its sealed
// file (see device.Sealed): batches carry the sealed records the device
// wrote, read from the sealed file's mapping, so the wire, the replica's
// journal and its pool file hold only ciphertext, each record bound to
// the pool's UUID and its line. The server needs no key: it applies,
// stores, serves and installs sealed files as it does plain ones, checks
// a sealed file's header (UUID and size) before installing it, and
// verifies its structure at start and on Scrub; whether records
// authenticate only the key holder can check (recovery.CheckSealedFile,
// pmemctl check --key-file). A standby with the key opens the replica
// with heap.Open. Snapshots of a sealed pool are sealed as they are sent,
// under new nonces, so they are always whole: the replica's chunk hashes
// are hashes of ciphertext and are not compared, and no delta is sent.
// Lines of zeros are sent as blank records, which tells the server which
// lines are zero. A key rotation (heap.RotateKey) reseals the records and
// rewrites the sealed header through the same device, so replicas rotate
// with the primary. Each batch also carries, in place of what the
// primary's file has at seal.DigestOff, a digest record sealed under the
// key that says the replica's lines hold exactly the primary's plaintext
// after that batch (epoch and sequence included), and a snapshot image
// carries one for its own state: the key holder's open compares the lines
// with it, so a record put back from an older state of its line, a
// blanked record, or an old batch replayed through the journal is found.
// What the server can still do undetected is put back a whole older state,
// digest record included.
//
// # Lifetime
//
// Closing the heap closes the Mirror first (heap.OnClose), so that
// nothing reads the pool's mapping once it is unmapped; closing the Mirror
// on its own stops replication and leaves the heap open.
package mirror
