package mirror

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

const testSize = 1 << 16

var testUUID = [16]byte{0xab, 1, 2, 3}

// installed returns a replica pool in dir holding a snapshot of image,
// installed at batch 1 of epoch 1.
func installed(t *testing.T, dir string, image []byte) *replicaPool {
	t.Helper()
	p, err := openReplicaPool(dir, testUUID)
	require.NoError(t, err)
	require.NoError(t, p.noteEpoch(1))
	s, err := p.beginSnapshot(1, 0, int64(len(image)), false)
	require.NoError(t, err)
	require.NoError(t, s.chunk(0, image))
	require.NoError(t, s.end(1))
	ok, err := p.snapBatch(s, 1, nil)
	require.NoError(t, err)
	require.True(t, ok)
	return p
}

func batchPayload(runs ...wire.Run) []byte {
	p := wire.AppendBatchHeader(nil, len(runs))
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
	image := bytes.Repeat([]byte{1}, testSize)
	run := wire.Run{Off: 4096, Data: bytes.Repeat([]byte{2}, 128)}
	after := bytes.Clone(image)
	copy(after[run.Off:], run.Data)

	t.Run("journaled, not applied", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image)
		require.NoError(t, p.j.write(record{kind: recordBatch, seen: 1, epoch: 1, seq: 2, payload: batchPayload(run)}))
		require.NoError(t, p.close())
		p, err := openReplicaPool(dir, testUUID)
		require.NoError(t, err)
		defer p.close()
		assert.Equal(t, [2]uint64{1, 2}, [2]uint64{p.epoch, p.seq})
		assert.Equal(t, after, readPool(t, p), "the journaled batch is applied")
	})
	t.Run("journal record torn", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image)
		next := p.j.files[(p.j.last.counter+1)%2]
		var rec record
		rec.counter, rec.kind, rec.seq, rec.payload = p.j.last.counter+1, recordBatch, 2, batchPayload(run)
		hdr := make([]byte, recordHeader)
		rec.encodeHeader(hdr)
		_, err := next.WriteAt(append(hdr, rec.payload[:len(rec.payload)/2]...), 0)
		require.NoError(t, err)
		require.NoError(t, p.close())
		p, err = openReplicaPool(dir, testUUID)
		require.NoError(t, err)
		defer p.close()
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
			p := installed(t, dir, image)
			s, err := p.beginSnapshot(1, 5, testSize, delta)
			require.NoError(t, err)
			require.NoError(t, s.chunk(run.Off, run.Data))
			require.NoError(t, s.f.Close())
			require.NoError(t, p.close())
			p, err = openReplicaPool(dir, testUUID)
			require.NoError(t, err)
			defer p.close()
			assert.Equal(t, uint64(1), p.seq)
			assert.Equal(t, image, readPool(t, p))
			assert.NoFileExists(t, p.snapPath())
		})
	}
	t.Run("install journaled, not renamed", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image)
		s, err := p.beginSnapshot(1, 5, testSize, false)
		require.NoError(t, err)
		require.NoError(t, s.chunk(0, after))
		require.NoError(t, s.f.Close())
		require.NoError(t, p.j.write(record{kind: recordInstall, seen: 1, epoch: 1, seq: 6}))
		require.NoError(t, p.close())
		p, err = openReplicaPool(dir, testUUID)
		require.NoError(t, err)
		defer p.close()
		assert.Equal(t, uint64(6), p.seq)
		assert.Equal(t, after, readPool(t, p), "the snapshot is installed")
	})
	t.Run("delta snapshot", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image)
		// A delta copy starts from the pool file; only the chunk sent
		// changes it.
		s, err := p.beginSnapshot(1, 5, testSize, true)
		require.NoError(t, err)
		require.NoError(t, s.chunk(run.Off, run.Data))
		require.NoError(t, s.end(6))
		assert.Equal(t, image, readPool(t, p), "the pool file is untouched until the install")
		ok, err := p.snapBatch(s, 6, nil)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, after, readPool(t, p))
		require.NoError(t, p.close())
	})
	t.Run("delta snapshot without a copy", func(t *testing.T) {
		p, err := openReplicaPool(t.TempDir(), testUUID)
		require.NoError(t, err)
		defer p.close()
		_, err = p.beginSnapshot(1, 5, testSize, true)
		require.Error(t, err)
	})
	t.Run("journal without RWF_DSYNC", func(t *testing.T) {
		// The path for kernels that refuse pwritev2 with RWF_DSYNC.
		dir := t.TempDir()
		p := installed(t, dir, image)
		p.j.noDSync = true
		require.NoError(t, p.applyBatch(1, 2, batchPayload(run), 0, []wire.Run{run}))
		require.NoError(t, p.close())
		p, err := openReplicaPool(dir, testUUID)
		require.NoError(t, err)
		defer p.close()
		assert.Equal(t, [2]uint64{1, 2}, [2]uint64{p.epoch, p.seq})
		assert.Equal(t, after, readPool(t, p))
	})
	t.Run("seen epoch survives", func(t *testing.T) {
		dir := t.TempDir()
		p := installed(t, dir, image)
		require.NoError(t, p.noteEpoch(7))
		require.NoError(t, p.close())
		p, err := openReplicaPool(dir, testUUID)
		require.NoError(t, err)
		defer p.close()
		assert.Equal(t, [3]uint64{7, 1, 1}, [3]uint64{p.seen, p.epoch, p.seq})
	})
}
