package mirror

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

const testSize = layout.MinPoolSize

// testImage returns the image of a new pool of testSize bytes, and its
// UUID.
func testImage(t *testing.T) ([]byte, [16]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: testSize})
	require.NoError(t, err)
	uuid := h.UUID()
	require.NoError(t, h.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b, uuid
}

// installed returns a replica pool in dir holding a snapshot of image,
// installed at batch 1 of epoch 1.
func installed(t *testing.T, dir string, image []byte, uuid [16]byte) *replicaPool {
	t.Helper()
	p, err := openReplicaPool(dir, uuid, nil)
	require.NoError(t, err)
	require.NoError(t, p.noteEpoch(1))
	s, err := p.beginSnapshot(1, 0, int64(len(image)), false, wire.Chain{})
	require.NoError(t, err)
	require.NoError(t, s.chunk(0, image))
	require.NoError(t, s.end(1))
	empty := batchPayload(wire.Chain{})
	ok, err := p.snapBatch(s, 1, xxhash.Sum64(empty), wire.Batch{})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, wire.NextChain(1, 1, xxhash.Sum64(empty)), p.chain)
	return p
}

func batchPayload(prev wire.Chain, runs ...wire.Run) []byte {
	p := wire.AppendBatchHeader(nil, prev, len(runs))
	for _, r := range runs {
		p = wire.AppendRun(p, r.Off, r.Data)
	}
	return p
}

func readPool(t *testing.T, p *replicaPool) []byte {
	t.Helper()
	b, err := os.ReadFile(p.poolPath())
	require.NoError(t, err)
	return b
}

// TestReplicaRecovery stops a replica at each point of applying a batch
// and of installing a snapshot, as a crash would, and checks that reopening
// finishes or discards the work so that the pool file holds the state of
// the batch the journal says.
func TestReplicaRecovery(t *testing.T) {
	image, uuid := testImage(t)
	run := wire.Run{Off: testSize / 2, Data: bytes.Repeat([]byte{2}, 128)}
	after := bytes.Clone(image)
	copy(after[run.Off:], run.Data)
	reopen := func(t *testing.T, dir string) *replicaPool {
		t.Helper()
		p, err := openReplicaPool(dir, uuid, nil)
		require.NoError(t, err)
		t.Cleanup(func() { p.release() })
		return p
	}

	t.Run("journaled, not applied", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		payload := batchPayload(p.chain, run)
		chain := wire.NextChain(1, 2, xxhash.Sum64(payload))
		require.NoError(t, p.j.write(record{kind: recordBatch, seen: 1, epoch: 1, seq: 2, chain: chain, payload: payload}))
		require.NoError(t, p.release())
		p = reopen(t, dir)
		assert.Equal(t, [2]uint64{1, 2}, [2]uint64{p.epoch, p.seq})
		assert.Equal(t, chain, p.chain)
		assert.Equal(t, after, readPool(t, p), "the journaled batch is applied")
	})
	t.Run("journal record torn", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		require.NoError(t, p.j.open())
		next := p.j.files[(p.j.last.counter+1)%2]
		var rec record
		rec.counter, rec.kind, rec.seq, rec.payload = p.j.last.counter+1, recordBatch, 2, batchPayload(p.chain, run)
		hdr := make([]byte, recordHeader)
		rec.encodeHeader(hdr)
		_, err := next.WriteAt(append(hdr, rec.payload[:len(rec.payload)/2]...), 0)
		require.NoError(t, err)
		require.NoError(t, p.release())
		p = reopen(t, dir)
		assert.Equal(t, uint64(1), p.seq, "the torn batch is discarded")
		assert.Equal(t, image, readPool(t, p))
	})
	for _, delta := range []bool{false, true} {
		name := "snapshot not installed"
		if delta {
			name = "delta " + name
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := installed(t, dir, image, uuid)
			s, err := p.beginSnapshot(1, 5, testSize, delta, wire.Chain{})
			require.NoError(t, err)
			require.NoError(t, s.chunk(0, after[:wire.HashChunk]))
			require.NoError(t, s.f.Close())
			require.NoError(t, p.release())
			p = reopen(t, dir)
			assert.Equal(t, uint64(1), p.seq)
			assert.Equal(t, image, readPool(t, p))
			assert.NoFileExists(t, p.snapPath())
		})
	}
	t.Run("install journaled, not renamed", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		s, err := p.beginSnapshot(1, 5, testSize, false, wire.Chain{})
		require.NoError(t, err)
		require.NoError(t, s.chunk(0, after))
		require.NoError(t, s.f.Close())
		require.NoError(t, p.j.write(record{kind: recordInstall, seen: 1, epoch: 1, seq: 6}))
		require.NoError(t, p.release())
		p = reopen(t, dir)
		assert.Equal(t, uint64(6), p.seq)
		assert.Equal(t, after, readPool(t, p), "the snapshot is installed")
	})
	t.Run("delta snapshot", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		// A delta copy starts from the pool file; only the chunk sent
		// changes it.
		s, err := p.beginSnapshot(1, 5, testSize, true, wire.Chain{9})
		require.NoError(t, err)
		u := run.Off / wire.HashChunk * wire.HashChunk
		require.NoError(t, s.chunk(u, after[u:u+wire.HashChunk]))
		require.NoError(t, s.end(6))
		assert.Equal(t, image, readPool(t, p), "the pool file is untouched until the install")
		payload := batchPayload(wire.Chain{9})
		ok, err := p.snapBatch(s, 6, xxhash.Sum64(payload), wire.Batch{Prev: wire.Chain{9}})
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, after, readPool(t, p))
		assert.Equal(t, wire.NextChain(1, 6, xxhash.Sum64(payload)), p.chain)
		require.NoError(t, p.release())
	})
	t.Run("delta snapshot without a copy", func(t *testing.T) {
		p := reopen(t, t.TempDir())
		_, err := p.beginSnapshot(1, 5, testSize, true, wire.Chain{})
		require.Error(t, err)
	})
	t.Run("journal without RWF_DSYNC", func(t *testing.T) {
		// The path for kernels that refuse pwritev2 with RWF_DSYNC.
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		p.j.noDSync = true
		payload := batchPayload(p.chain, run)
		require.NoError(t, p.applyBatch(1, 2, payload, 0, wire.Batch{Prev: p.chain, Runs: []wire.Run{run}}))
		require.NoError(t, p.release())
		p = reopen(t, dir)
		assert.Equal(t, [2]uint64{1, 2}, [2]uint64{p.epoch, p.seq})
		assert.Equal(t, after, readPool(t, p))
	})
	t.Run("seen epoch survives", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image, uuid)
		require.NoError(t, p.noteEpoch(7))
		require.NoError(t, p.release())
		p = reopen(t, dir)
		assert.Equal(t, [3]uint64{7, 1, 1}, [3]uint64{p.seen, p.epoch, p.seq})
	})
}

// TestWriteFault maps a replica pool, then shrinks its file under the
// mapping, as a full disk or an I/O error paging in would make a write
// fault: the batch fails with an error instead of crashing the server.
func TestWriteFault(t *testing.T) {
	image, uuid := testImage(t)
	p := installed(t, t.TempDir(), image, uuid)
	defer p.release()
	require.NoError(t, os.Truncate(p.poolPath(), 4096))
	run := wire.Run{Off: testSize / 2, Data: bytes.Repeat([]byte{3}, 64)}
	err := p.applyBatch(1, 2, batchPayload(p.chain, run), 0, wire.Batch{Prev: p.chain, Runs: []wire.Run{run}})
	require.ErrorIs(t, err, ErrReplicaIO)
	assert.Contains(t, err.Error(), "memory fault")
}

// TestReplicaGrowsCopy grows an installed replica's copy, as a primary
// that grew its pool in the replica's epoch has it do: the file is longer
// than its pool's header says, which opens as the pool it was, and the
// replica, reopened, holds the new size and its position, and applies a
// batch that writes the new part.
func TestReplicaGrowsCopy(t *testing.T) {
	image, uuid := testImage(t)
	dir := t.TempDir()
	p := installed(t, dir, image, uuid)
	require.NoError(t, p.grow(2*testSize))
	require.NoError(t, p.release())

	fi, err := os.Stat(p.poolPath())
	require.NoError(t, err)
	assert.EqualValues(t, 2*testSize, fi.Size())
	got, err := os.ReadFile(p.poolPath())
	require.NoError(t, err)
	assert.True(t, bytes.Equal(image, got[:testSize]), "the copy changed")
	assert.True(t, bytes.Equal(make([]byte, testSize), got[testSize:]), "the new part is not zeros")
	h, err := heap.Open(p.poolPath(), &heap.Options{ReadOnly: true})
	require.NoError(t, err, "a grown copy does not open as a pool")
	assert.EqualValues(t, testSize, h.Stats().Size)
	require.NoError(t, h.Close())

	q, err := openReplicaPool(dir, uuid, nil)
	require.NoError(t, err)
	defer q.release()
	require.NoError(t, q.reopen())
	assert.EqualValues(t, 2*testSize, q.size)
	assert.Equal(t, p.chain, q.chain)
	end := wire.Run{Off: 2*testSize - 8, Data: []byte("new end!")}
	payload := batchPayload(q.chain, end)
	b, err := wire.DecodeBatch(payload, nil)
	require.NoError(t, err)
	require.NoError(t, q.applyBatch(1, 2, payload, 0, b))
	require.NoError(t, q.syncPool())
	got, err = os.ReadFile(q.poolPath())
	require.NoError(t, err)
	assert.Equal(t, "new end!", string(got[2*testSize-8:]))
}
