package mirror_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
	"github.com/pmemgo/pmemgo/recovery"
)

// Named is a node whose name is a marker string.
type Named struct {
	Name string
	Next *Named
}

type NamedRoot struct {
	Head *Named
}

func newMirrorKey(t testing.TB) []byte {
	k := make([]byte, seal.KeySize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

// pushName links a node named name at the head of the root's list.
func pushName(h *heap.Heap, name string) error {
	return h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[NamedRoot](tx)
		if err != nil {
			return err
		}
		n, err := heap.New[Named](tx)
		if err != nil {
			return err
		}
		if n.Name, err = heap.NewString(tx, name); err != nil {
			return err
		}
		n.Next = r.Head
		return heap.Set(tx, &r.Head, n)
	})
}

// names returns the names on the list of the pool at path, opened
// read-only with key.
func names(t testing.TB, path string, key []byte) []string {
	t.Helper()
	h, err := heap.Open(path, &heap.Options{ReadOnly: true, Key: key, Timeout: 10 * time.Second})
	require.NoError(t, err)
	defer h.Close()
	var out []string
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		r, err := heap.Root[NamedRoot](tx)
		if err != nil || r == nil {
			return err
		}
		for n := r.Head; n != nil; n = n.Next {
			out = append(out, strings.Clone(n.Name))
		}
		return nil
	}))
	return out
}

// requireNoMarker fails if a file under dir holds a marker or a plaintext
// pool header.
func requireNoMarker(t *testing.T, dir string, markers []string) {
	t.Helper()
	files := 0
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, m := range markers {
			require.False(t, bytes.Contains(b, []byte(m)), "%s holds marker %q", path, m)
		}
		require.False(t, bytes.Contains(b, []byte(layout.Magic)), "%s holds a plaintext pool header", path)
		return nil
	}))
	require.Positive(t, files)
}

// TestSealedReplica replicates a sealed pool: the server's files hold no
// plaintext, through the snapshot a new replica gets and the batches
// after it, in both modes, and the key holder opens the replica and
// reads every marker. The server, without the key, verifies the sealed
// file at start and on scrub.
func TestSealedReplica(t *testing.T) {
	for _, mode := range []mirror.Mode{mirror.Sync, mirror.Async} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := fastDir(t)
			srv, addr := startServer(t, dir)
			key := newMirrorKey(t)
			h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize, Key: key})
			require.NoError(t, err)
			defer h.Close()
			var markers []string
			// Commits before the mirror starts reach the replica in the
			// snapshot, the others in batches.
			for i := range 5 {
				markers = append(markers, fmt.Sprintf("SNAPSHOT-MARKER-%d-9d1f", i))
				require.NoError(t, pushName(h, markers[len(markers)-1]))
			}
			m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Mode: mode, Logger: testLogger(t)}))
			require.NoError(t, err)
			flush(t, m)
			for i := range 30 {
				markers = append(markers, fmt.Sprintf("BATCH-MARKER-%d-4c2e", i))
				require.NoError(t, pushName(h, markers[len(markers)-1]))
			}
			flush(t, m)
			require.NoError(t, m.Close())
			require.NoError(t, srv.Close())

			requireNoMarker(t, dir, markers)
			path := replicaFile(t, dir)
			got := names(t, path, key)
			require.Len(t, got, len(markers))
			for i, name := range got {
				assert.Equal(t, markers[len(markers)-1-i], name)
			}
			_, err = heap.Open(path, &heap.Options{ReadOnly: true})
			require.ErrorIs(t, err, pmemgo.ErrBadKey, "a replica of a sealed pool needs the key")

			// A standby takes over a copy of the replica, read-write.
			standby := filepath.Join(t.TempDir(), "standby.pool")
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(standby, b, 0o600))
			sh, err := heap.Open(standby, &heap.Options{Key: key, ForceRelocate: true})
			require.NoError(t, err)
			require.NoError(t, pushName(sh, "after-failover"))
			require.NoError(t, sh.Close())
			assert.Equal(t, append([]string{"after-failover"}, got...), names(t, standby, key))

			var problems []string
			_, err = recovery.CheckSealedFile(path, key, nil, func(p recovery.Problem) bool {
				problems = append(problems, p.String())
				return true
			})
			require.NoError(t, err)
			require.Empty(t, problems)

			srv2, _ := startServer(t, dir)
			for _, st := range srv2.Status() {
				assert.NotEqual(t, "damaged", st.State, "a sealed replica passes the keyless checks at start: %s", st.LastError)
			}
			for _, r := range srv2.Scrub() {
				assert.True(t, r.OK, "scrub: %v", r.Problems)
			}
		})
	}
}

// TestSealedReplicaTamper changes a stopped replica's sealed pool file:
// the key holder's open refuses each change with an error naming the
// file offset, and the server's keyless scrub catches what a structure
// check can.
func TestSealedReplicaTamper(t *testing.T) {
	dir := fastDir(t)
	srv, addr := startServer(t, dir)
	key := newMirrorKey(t)
	h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize, Key: key})
	require.NoError(t, err)
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t)}))
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, pushName(h, fmt.Sprintf("name-%d", i)))
	}
	flush(t, m)
	require.NoError(t, m.Close())
	require.NoError(t, h.Close())
	require.NoError(t, srv.Close())
	path := replicaFile(t, dir)
	orig, err := os.ReadFile(path)
	require.NoError(t, err)

	// Another sealed pool under the same key: its records are at the same
	// offsets, but bound to another UUID.
	other := filepath.Join(t.TempDir(), "other.pool")
	h2, err := heap.Open(other, &heap.Options{Size: poolSize, Key: key})
	require.NoError(t, err)
	require.NoError(t, pushName(h2, "other"))
	require.NoError(t, h2.Close())
	otherImg, err := os.ReadFile(other)
	require.NoError(t, err)

	stateRec, hdrRec := seal.RecordOff(layout.StateOff), seal.RecordOff(0)
	rec := func(b []byte, off int64) []byte { return b[off : off+seal.RecordSize] }
	for _, tc := range []struct {
		name   string
		change func(b []byte)
		at     int64
		// keyless is set when the server's scrub, without the key, can
		// see the change.
		keyless bool
	}{
		{"bit flip", func(b []byte) { b[stateRec+50] ^= 2 }, stateRec, false},
		{"records swapped", func(b []byte) {
			a := bytes.Clone(rec(b, hdrRec))
			copy(rec(b, hdrRec), rec(b, stateRec))
			copy(rec(b, stateRec), a)
		}, hdrRec, false},
		{"record of another pool", func(b []byte) { copy(rec(b, stateRec), rec(otherImg, stateRec)) }, stateRec, false},
		{"padding", func(b []byte) { b[stateRec+seal.RecordSize-1] = 1 }, stateRec, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			tc.change(b)
			require.NoError(t, os.WriteFile(path, b, 0o644))
			_, err := heap.Open(path, &heap.Options{ReadOnly: true, Key: key})
			require.Error(t, err)
			assert.Contains(t, err.Error(), fmt.Sprintf("file offset %d", tc.at))

			var problems []string
			_, err = recovery.CheckSealedFile(path, key, nil, func(p recovery.Problem) bool {
				problems = append(problems, p.String())
				return true
			})
			require.NoError(t, err)
			require.NotEmpty(t, problems)
			assert.Contains(t, problems[0], fmt.Sprintf("offset %d", tc.at))

			srv, _ := startServer(t, dir)
			res := srv.Scrub()
			require.Len(t, res, 1)
			assert.Equal(t, !tc.keyless, res[0].OK, "keyless scrub: %v", res[0].Problems)
			require.NoError(t, srv.Close())
		})
	}
}

// TestSealedReplicaJournalTamper changes a sealed record inside the
// replica's journal and fixes the journal's keyless checksums, as someone
// with the server's disk but not the key can. The server redoes the
// journaled batch at start; the key holder's open then refuses the pool
// with an error naming the record's file offset.
func TestSealedReplicaJournalTamper(t *testing.T) {
	dir := fastDir(t)
	srv, addr := startServer(t, dir)
	key := newMirrorKey(t)
	h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize, Key: key})
	require.NoError(t, err)
	defer h.Close()
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t)}))
	require.NoError(t, err)
	flush(t, m)
	// A sync commit returns once the replica journaled and applied its
	// batch, which is then the newest journal record (a Flush would add
	// an empty one).
	require.NoError(t, pushName(h, "last"))
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())

	journals, err := filepath.Glob(filepath.Join(dir, "*.journal.*"))
	require.NoError(t, err)
	var newest string
	var newestCounter uint64
	for _, j := range journals {
		b, err := os.ReadFile(j)
		require.NoError(t, err)
		if len(b) >= 104 && binary.LittleEndian.Uint64(b[8:]) >= newestCounter {
			newest, newestCounter = j, binary.LittleEndian.Uint64(b[8:])
		}
	}
	jb, err := os.ReadFile(newest)
	require.NoError(t, err)
	require.Equal(t, byte(2), jb[16], "the newest journal record is a batch")
	payload := jb[104 : 104+binary.LittleEndian.Uint64(jb[48:])]
	batch, err := wire.DecodeBatch(payload, nil)
	require.NoError(t, err)
	last := batch.Runs[len(batch.Runs)-1]
	require.Zero(t, len(last.Data)%seal.RecordSize, "runs carry whole records")
	recOff := int64(last.Off) + int64(len(last.Data)) - seal.RecordSize
	last.Data[len(last.Data)-seal.RecordSize+40] ^= 1
	binary.LittleEndian.PutUint64(jb[56:], xxhash.Sum64(payload))
	binary.LittleEndian.PutUint64(jb[96:], xxhash.Sum64(jb[:96]))
	require.NoError(t, os.WriteFile(newest, jb, 0o644))

	srv2, _ := startServer(t, dir)
	require.NoError(t, srv2.Close())
	_, err = heap.Open(replicaFile(t, dir), &heap.Options{ReadOnly: true, Key: key})
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("file offset %d", recOff))
}

// TestSealedReplicaRotateKey rotates the key of a replicated sealed pool
// while commits go on: the replica follows, batch by batch, header
// included, and opens with the new key alone once the rotation is
// replicated.
func TestSealedReplicaRotateKey(t *testing.T) {
	for _, mode := range []mirror.Mode{mirror.Sync, mirror.Async} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := fastDir(t)
			srv, addr := startServer(t, dir)
			oldKey, newKey := newMirrorKey(t), newMirrorKey(t)
			h, err := heap.Open(filepath.Join(fastDir(t), "primary.pool"), &heap.Options{Size: poolSize, Key: oldKey})
			require.NoError(t, err)
			defer h.Close()
			m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Mode: mode, Logger: testLogger(t)}))
			require.NoError(t, err)
			var want []string
			for i := range 5 {
				want = append(want, fmt.Sprintf("before-%d", i))
				require.NoError(t, pushName(h, want[len(want)-1]))
			}
			// No flush: the replica's snapshot may be taken and sent while
			// the rotation runs.
			done := make(chan error, 1)
			go func() { done <- h.RotateKey(context.Background(), newKey) }()
			for i := range 10 {
				want = append(want, fmt.Sprintf("during-%d", i))
				require.NoError(t, pushName(h, want[len(want)-1]))
			}
			require.NoError(t, <-done)
			flush(t, m)
			require.NoError(t, m.Close())
			require.NoError(t, srv.Close())

			path := replicaFile(t, dir)
			_, err = heap.Open(path, &heap.Options{ReadOnly: true, Key: oldKey})
			require.ErrorIs(t, err, pmemgo.ErrBadKey)
			got := names(t, path, newKey)
			assert.ElementsMatch(t, want, got)
		})
	}
}
