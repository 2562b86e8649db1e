package ha

import (
	"fmt"
	"io"
	"os"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// readDirtyBase reads the dirty-chunk record of the pool file at path,
// whose header and undo log word are head, and returns what a save can
// start from: the replicas' base and the chunks a replica holding it
// lacks. It reads neither the pool nor its file, and head must have been
// read before the pool is opened (which changes the log word). The error says why the record cannot be used:
// missing, damaged, of another pool, boot or size, or a pool written
// since by someone who kept no record.
//
// A sealed pool's chunks are those of its sealed file, whose header page
// is shipped with the metadata.
func readDirtyBase(path string, head poolHead) (*mirror.Base, error) {
	b, err := os.ReadFile(dirtyPath(path))
	if err != nil {
		return nil, err
	}
	rec, err := decodeDirtyHeader(b)
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", dirtyPath(path), err)
	}
	ph, gen, size := head.hdr, head.gen, head.size
	chunks := (size + wire.HashChunk - 1) / wire.HashChunk
	switch {
	case rec.version != dirtyVersion || rec.chunkSize != wire.HashChunk:
		return nil, fmt.Errorf("record version %d with chunks of %d bytes, want version %d with chunks of %d", rec.version, rec.chunkSize, dirtyVersion, wire.HashChunk)
	case rec.Epoch == 0:
		return nil, fmt.Errorf("record of a primary whose mirror did not start")
	case rec.Boot != bootID():
		return nil, fmt.Errorf("record of an earlier boot of this machine: what it marked last may not have reached the file")
	case rec.UUID != ph.UUID || rec.Size != uint64(size):
		return nil, fmt.Errorf("record of pool %x of %d bytes, the pool file holds pool %x of %d bytes", rec.UUID, rec.Size, ph.UUID, size)
	case !genExpected(gen, rec.Gen):
		return nil, fmt.Errorf("the pool's undo log is at generation %d, the record expects %d: the pool was written by someone who kept no record", gen, rec.Gen)
	case int64(len(b)) != dirtyMarks+8*chunks:
		return nil, fmt.Errorf("record of %d bytes, want %d for %d chunks", len(b), dirtyMarks+8*chunks, chunks)
	}
	marks := make([]uint64, chunks)
	for i := range marks {
		marks[i] = dle.Uint64(b[dirtyMarks+8*i:])
	}
	// What open and close write is not marked before it is written: the
	// header slots, the heap state and open mark, the slab summary and
	// the undo log's word. It is shipped whatever the record says.
	meta := [][2]uint64{{0, layout.MetaEnd}, {ph.SumOff, ph.SumSize}, {ph.LogOff + layout.LogGenOff, 8}}
	if head.sealed {
		for i, r := range meta {
			meta[i][0], meta[i][1] = sealedRange(r[0], r[1])
		}
		// The sealed header, its digest record above all.
		meta = append(meta, [2]uint64{0, seal.HeaderSize})
	}
	for _, r := range meta {
		for c := r[0] / wire.HashChunk; c*wire.HashChunk < r[0]+r[1] && c < uint64(chunks); c++ {
			marks[c] = pendingMark
		}
	}
	n := int64(0)
	for _, m := range marks {
		if m > rec.Acked {
			n += wire.HashChunk
		}
	}
	if n > wire.MaxListed {
		return nil, fmt.Errorf("the record lists %d bytes changed, more than a listed save carries (%d)", n, wire.MaxListed)
	}
	return &mirror.Base{Epoch: rec.Epoch, MinSeq: rec.Acked, Marks: marks}, nil
}

// genExpected reports whether the pool file's undo log generation gen
// is one that the record's, want, allows without another writer: want
// itself, or one of the two before it when the process died before its
// last stores of the word reached the file (on a device that buffers
// stores, a sealed pool's, a store reaches the file at a later fence):
// any open of the pool since would have retired the log past want, to
// at least RetireGen(want-2). RetireGen(want) is a recovery of the pool
// at want, a guardian's earlier attempt, that committed nothing, or the
// case the package doc names.
func genExpected(gen, want uint64) bool {
	return gen == want || gen == layout.RetireGen(want) || (gen < want && gen+2 >= want)
}

// poolHead is what a save reads of a pool file before it opens the pool.
type poolHead struct {
	// hdr is the newest valid header, gen the generation the undo log
	// word holds, size the file's size; sealed is set for a sealed pool.
	hdr    layout.Header
	gen    uint64
	size   int64
	sealed bool
}

// readPoolHead reads the head of the pool file at path, a sealed pool's
// through key.
func readPoolHead(path string, key []byte) (poolHead, error) {
	ph, gen, size, err := readHead(path, key)
	return poolHead{hdr: ph, gen: gen, size: size, sealed: key != nil}, err
}

func readHead(path string, key []byte) (layout.Header, uint64, int64, error) {
	var ph layout.Header
	f, err := os.Open(path)
	if err != nil {
		return ph, 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ph, 0, 0, err
	}
	var pool io.ReaderAt = f
	if key != nil {
		if pool, _, err = (device.Sealed{Key: key}).PoolReader(f); err != nil {
			return ph, 0, 0, fmt.Errorf("sealed pool %s: %w", path, err)
		}
	}
	b := make([]byte, layout.SlotOff(1)+layout.HeaderBytes)
	if _, err := pool.ReadAt(b, 0); err != nil {
		return ph, 0, 0, fmt.Errorf("pool header of %s: %w", path, err)
	}
	var found bool
	for i := range 2 {
		h, err := layout.DecodeHeader(b[layout.SlotOff(i):])
		if err == nil && (!found || h.Seq > ph.Seq) {
			ph, found = h, true
		}
	}
	if !found {
		return ph, 0, 0, fmt.Errorf("pool %s has no valid header", path)
	}
	var w [8]byte
	if _, err := pool.ReadAt(w[:], int64(ph.LogOff+layout.LogGenOff)); err != nil {
		return ph, 0, 0, fmt.Errorf("undo log word of %s: %w", path, err)
	}
	gen, ok := layout.OpenWord(dle.Uint64(w[:]))
	if !ok {
		return ph, 0, 0, fmt.Errorf("undo log word of %s fails its check", path)
	}
	return ph, gen, fi.Size(), nil
}

// checkOpened returns an error if opening the pool changed more than the
// record and the metadata cover: it was mapped at a new base, so every
// pointer was rewritten, or it holds another epoch than the record's; or
func checkOpened(h *heap.Heap, base *mirror.Base) error {
	rep := h.Recovery()
	switch {
	case rep.Relocated || rep.Resumed:
		return fmt.Errorf("the pool was mapped at a new base (%#x, was %#x) and its pointers rewritten", rep.NewBase, rep.OldBase)
	case h.Epoch() != base.Epoch:
		return fmt.Errorf("the pool is at epoch %d, the record at %d", h.Epoch(), base.Epoch)
	case (len(replicated(h))+wire.HashChunk-1)/wire.HashChunk != len(base.Marks):
		return fmt.Errorf("the pool replicates %d bytes, the record has %d chunks", len(replicated(h)), len(base.Marks))
	}
	return nil
}
