package mirror_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/recovery"
)

// replicateTwice replicates a sealed pool in sync mode: five commits,
// then fn (the replica holds them), then five more. It returns the
// server's directory and the key.
func replicateTwice(t *testing.T, fn func(dir string)) (string, []byte) {
	dir := fastDir(t)
	srv, addr := startServer(t, dir)
	key := newMirrorKey(t)
	h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize, Key: key})
	require.NoError(t, err)
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t)}))
	require.NoError(t, err)
	for i := range 10 {
		if i == 5 {
			flush(t, m)
			fn(dir)
		}
		require.NoError(t, pushName(h, fmt.Sprintf("name-%d", i)))
	}
	flush(t, m)
	require.NoError(t, m.Close())
	require.NoError(t, h.Close())
	require.NoError(t, srv.Close())
	return dir, key
}

// requireRolledBackRefused opens the replica with the key, and checks it:
// both find that its lines do not match its digest record.
func requireRolledBackRefused(t *testing.T, path string, key []byte) {
	t.Helper()
	_, err := heap.Open(path, &heap.Options{ReadOnly: true, Key: key})
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), fmt.Sprintf("digest record at file offset %d", seal.DigestOff))
	var problems []recovery.Problem
	_, err = recovery.CheckSealedFile(path, key, nil, func(p recovery.Problem) bool {
		problems = append(problems, p)
		return true
	})
	require.NoError(t, err)
	require.NotEmpty(t, problems)
	assert.Equal(t, "digest", problems[len(problems)-1].Kind, "%v", problems)
}

// TestSealedReplicaOlderRecords puts back into a replica's sealed file the
// records its lines had five commits earlier, as someone holding the
// server's disk but not the key can: each record still opens (it is bound
// to its pool and line), and the pool they make is a valid older one, but
// the replica's digest record, which every batch brings, refuses it.
func TestSealedReplicaOlderRecords(t *testing.T) {
	var early []byte
	var path string
	_, key := replicateTwice(t, func(dir string) {
		path = replicaFile(t, dir)
		var err error
		early, err = os.ReadFile(path)
		require.NoError(t, err)
	})
	final, err := os.ReadFile(path)
	require.NoError(t, err)
	h, err := heap.Open(path, &heap.Options{ReadOnly: true, Key: key})
	require.NoError(t, err, "the replica as the primary left it opens and its digest matches")
	require.NoError(t, h.Close())

	changed := 0
	for off := int64(seal.HeaderSize); off < int64(len(final)); off += seal.RecordSize {
		if string(final[off:off+seal.RecordSize]) != string(early[off:off+seal.RecordSize]) {
			copy(final[off:], early[off:off+seal.RecordSize])
			changed++
		}
	}
	require.NotZero(t, changed)
	require.NoError(t, os.WriteFile(path, final, 0o644))
	requireRolledBackRefused(t, path, key)
}

// TestSealedReplicaReplayedBatch puts an old batch's journal record back
// as the newest one, with the keyless fields (counter, epoch, sequence,
// checksums) made to fit, so that the server redoes it at start: the key
// holder's open refuses the pool it leaves.
func TestSealedReplicaReplayedBatch(t *testing.T) {
	var old []byte
	dir, key := replicateTwice(t, func(dir string) {
		old, _ = newestJournal(t, dir)
	})
	h, err := heap.Open(replicaFile(t, dir), &heap.Options{ReadOnly: true, Key: key})
	require.NoError(t, err, "the replica as the primary left it opens and its digest matches")
	require.NoError(t, h.Close())
	newest, name := newestJournal(t, dir)
	counter := binary.LittleEndian.Uint64(newest[8:]) + 1
	require.Equal(t, byte(2), old[16], "the old record is a batch")
	binary.LittleEndian.PutUint64(old[8:], counter)
	copy(old[24:48], newest[24:48]) // seen, epoch, sequence
	copy(old[64:96], newest[64:96]) // chain
	binary.LittleEndian.PutUint64(old[96:], xxhash.Sum64(old[:96]))
	target := name[:len(name)-1] + fmt.Sprint(counter%2)
	require.NoError(t, os.WriteFile(target, old, 0o644))

	srv, _ := startServer(t, dir)
	require.NoError(t, srv.Close())
	requireRolledBackRefused(t, replicaFile(t, dir), key)
}

// newestJournal returns the bytes and the path of the replica's newest
// journal record.
func newestJournal(t *testing.T, dir string) ([]byte, string) {
	t.Helper()
	journals, err := filepath.Glob(filepath.Join(dir, "*.journal.*"))
	require.NoError(t, err)
	var newest []byte
	var name string
	for _, j := range journals {
		b, err := os.ReadFile(j)
		require.NoError(t, err)
		if len(b) >= 104 && (newest == nil || binary.LittleEndian.Uint64(b[8:]) >= binary.LittleEndian.Uint64(newest[8:])) {
			newest, name = b, j
		}
	}
	require.NotNil(t, newest)
	return newest, name
}
