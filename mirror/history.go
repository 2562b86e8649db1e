package mirror

import (
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// batch is a captured batch: the lines written back between two commit
// boundaries (several, in async mode), with their content at the later
// boundary, encoded once as a wire frame that every replica is sent.
type batch struct {
	seq   uint64
	frame []byte
	// prev and chain are the chain values before and after the batch.
	prev, chain wire.Chain
	// bytes is the pool bytes it carries; cum the pool bytes captured up
	// to and including it, so that lag in bytes is a subtraction.
	bytes, cum int64
	// oldest is when the oldest commit it carries ended; captured is when
	// it was read from the pool.
	oldest, captured time.Time
	// size is the pool's size when the batch was captured: a replica
	// must hold a copy that large to apply it (see Mirror.grown).
	size int64
	// refs counts the writes of frame under way; dropped is set once the
	// history let the batch go. The frame is recycled when both allow it.
	// Both are guarded by Mirror.mu.
	refs    int
	dropped bool
	// runs and snap are set while the batch is captured but not read
	// (Mirror.lazy): snap keeps the old content of its lines that later
	// commits change. Under Mirror.mu.
	runs []Run
	snap *heap.Snapshot
}

// take returns the frame for a write to a replica; done must follow.
func (b *batch) take() []byte {
	b.refs++
	return b.frame
}

// done ends a write of the frame taken with take.
func (b *batch) done() {
	b.refs--
	b.recycle()
}

// drop lets the batch go from the history.
func (b *batch) drop() {
	b.dropped = true
	b.recycle()
}

func (b *batch) recycle() {
	if b.dropped && b.refs == 0 && b.frame != nil {
		putFrame(b.frame)
		b.frame = nil
	}
}

// history is the batches kept for replicas that fall behind or reconnect,
// oldest first with consecutive sequence numbers.
type history struct {
	batches []*batch
	bytes   int64 // frame memory held, buffers' capacity
	limit   int64
}

// add appends b and drops the oldest batches while more than limit bytes
// are held, except those some replica still needs (seq >= keep), up to
// four times the limit. A batch not read yet is the newest, never dropped.
func (h *history) add(b *batch, keep uint64) {
	h.batches = append(h.batches, b)
	h.bytes += int64(cap(b.frame))
	for len(h.batches) > 1 && h.bytes > h.limit {
		old := h.batches[0]
		if old.seq >= keep && h.bytes <= 4*h.limit {
			break
		}
		h.bytes -= int64(cap(old.frame))
		h.batches[0] = nil
		h.batches = h.batches[1:]
		old.drop()
	}
}

// reset drops every batch.
func (h *history) reset() {
	for _, b := range h.batches {
		b.drop()
	}
	*h = history{limit: h.limit}
}

// get returns batch seq, or nil if it was dropped or not yet captured.
func (h *history) get(seq uint64) *batch {
	if len(h.batches) == 0 {
		return nil
	}
	first := h.batches[0].seq
	if seq < first || seq-first >= uint64(len(h.batches)) {
		return nil
	}
	return h.batches[seq-first]
}
