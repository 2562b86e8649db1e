package mirror

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// TestListedSnapshot applies a listed snapshot to a replica that holds
// batch 1 of epoch 1: two chunks, then the batch it is consistent at.
// Stopped after the chunks' record is durable but before they reach the
// pool file, reopening redoes them; stopped with that record torn, the
// replica keeps its base. Chunks out of order, and a snapshot without the
// base, are refused.
func TestListedSnapshot(t *testing.T) {
	image, uuid := testImage(t)
	chunk := func(i int, b byte) (uint64, []byte) {
		return uint64(i * wire.HashChunk), bytes.Repeat([]byte{b}, wire.HashChunk)
	}
	after := bytes.Clone(image)
	for i, b := range map[int]byte{1: 7, 3: 9} {
		off, data := chunk(i, b)
		copy(after[off:], data)
	}
	listed := func(t *testing.T, p *replicaPool) *snapshot {
		t.Helper()
		require.NoError(t, p.noteEpoch(2))
		s, err := p.beginListed(2, 5, int64(len(image)), wire.Chain{5})
		require.NoError(t, err)
		require.NoError(t, s.chunk(chunk(1, 7)))
		require.NoError(t, s.chunk(chunk(3, 9)))
		require.NoError(t, s.end(6))
		return s
	}
	empty := batchPayload(wire.Chain{5})
	batch := wire.Batch{Prev: wire.Chain{5}}

	t.Run("applied", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		ok, err := p.listedBatch(listed(t, p), 6, empty, xxhash.Sum64(empty), batch)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, [2]uint64{2, 6}, [2]uint64{p.epoch, p.seq})
		require.NoError(t, p.release())
		assert.Equal(t, after, readPool(t, p))
		q, err := openReplicaPool(dir, uuid, nil)
		require.NoError(t, err)
		defer q.release()
		assert.Equal(t, [2]uint64{2, 6}, [2]uint64{q.epoch, q.seq})
	})
	t.Run("journaled, not applied", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		s := listed(t, p)
		// The chunks' record is made as applyListed makes it, and the
		// replica stops before copying them.
		start := wire.AppendBatchHeader(nil, s.chain, len(s.runs))
		_, err := s.jf.WriteAt(start, recordHeader)
		require.NoError(t, err)
		require.NoError(t, p.j.commitStream(record{kind: recordBatch, seen: p.seen, epoch: 2, seq: 5, chain: s.chain, streamed: s.pos}))
		require.NoError(t, p.release())
		assert.Equal(t, image, readPool(t, p))
		q, err := openReplicaPool(dir, uuid, nil)
		require.NoError(t, err)
		defer q.release()
		assert.Equal(t, [3]uint64{2, 5, 2}, [3]uint64{q.epoch, q.seq, q.seen})
		assert.Equal(t, wire.Chain{5}, q.chain)
		assert.Equal(t, after, readPool(t, q), "the chunks are redone")
	})
	t.Run("record torn", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		s := listed(t, p)
		require.NoError(t, p.j.commitStream(record{kind: recordBatch, seen: p.seen, epoch: 2, seq: 5, chain: s.chain, streamed: s.pos}))
		name := s.jf.Name()
		require.NoError(t, p.release())
		// The payload's last bytes never reached the file.
		require.NoError(t, os.Truncate(name, recordHeader+s.pos-1))
		q, err := openReplicaPool(dir, uuid, nil)
		require.NoError(t, err)
		defer q.release()
		assert.Equal(t, [2]uint64{1, 1}, [2]uint64{q.epoch, q.seq}, "the replica keeps its base")
		assert.Equal(t, image, readPool(t, q))
	})
	t.Run("refused", func(t *testing.T) {
		p := installed(t, t.TempDir(), image, uuid)
		defer p.release()
		s, err := p.beginListed(2, 5, int64(len(image)), wire.Chain{5})
		require.NoError(t, err)
		require.NoError(t, s.chunk(chunk(3, 9)))
		assert.ErrorIs(t, s.chunk(chunk(1, 7)), ErrProtocol)
		_, err = p.beginListed(1, 5, int64(len(image)), wire.Chain{5})
		assert.ErrorIs(t, err, ErrProtocol, "a listed snapshot of the replica's own epoch")
		_, err = p.beginListed(2, 5, int64(len(image))+4096, wire.Chain{5})
		assert.ErrorIs(t, err, ErrProtocol, "a listed snapshot of another size")
	})
}

// TestBaseOptionChecked checks that Start refuses a base that does not
// fit the pool.
func TestBaseOptionChecked(t *testing.T) {
	h, err := heap.Open(filepath.Join(t.TempDir(), "p.pool"), &heap.Options{Size: testSize})
	require.NoError(t, err)
	defer h.Close()
	for _, b := range []*Base{
		{Epoch: 0, Marks: make([]uint64, testSize/wire.HashChunk)},
		{Epoch: 3, Marks: make([]uint64, testSize/wire.HashChunk+1)},
	} {
		_, err := Start(h, Options{Replicas: []string{"127.0.0.1:1"}, Insecure: true, Base: b})
		assert.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	}
}
