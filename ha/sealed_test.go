package ha_test

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// sealedKey is the pool key of the sealed scenarios.
var sealedKey = bytes.Repeat([]byte{0x5e}, seal.KeySize)

// marker is written through the application into every commit of a
// sealed pool: no file of the standby may hold it.
const marker = "pmemgo-ha-sealed-marker"

// Noted is the root of the sealed scenarios: a counter and a note that
// holds the marker.
type Noted struct {
	N    uint64
	Note [64]byte
}

// sealedApp makes a fresh sealed pool the primary, replicating
// asynchronously to addr, and commits n times.
func sealedApp(t *testing.T, coord ha.Coordinator, path, addr string, n int) (*heap.Heap, *ha.Primary) {
	t.Helper()
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20, Key: sealedKey})
	require.NoError(t, err)
	mo := syncMirror(t, addr, nil)
	mo.Mode = mirror.Async
	p, err := ha.StartPrimary(context.Background(), h, ha.PrimaryOptions{Coordinator: coord, Pool: "orders", Node: "a", Mirror: mo})
	require.NoError(t, err)
	commitNoted(t, h, n)
	return h, p
}

// commitNoted commits n times, each adding one to the counter and
// writing the marker with the count.
func commitNoted(t *testing.T, h *heap.Heap, n int) {
	t.Helper()
	for range n {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			r, err := heap.Root[Noted](tx)
			if err != nil {
				return err
			}
			if err := heap.Add(tx, r); err != nil {
				return err
			}
			r.N++
			copy(r.Note[:], marker)
			r.Note[len(marker)] = byte(r.N)
			return nil
		}))
	}
}

// notedOf opens a closed sealed pool with the key and returns its counter.
func notedOf(t *testing.T, path string) uint64 { return rootOf[Noted](t, path, sealedKey).N }

// sealedGuard is a guard of the sealed pool at path.
func sealedGuard(t *testing.T, coord ha.Coordinator, path string, sb *standbyRun) *ha.Guard {
	g, err := ha.NewGuard(ha.GuardOptions{
		PoolPath: path, Pool: "orders", Node: "a", Coordinator: coord,
		Standby: sb.replica, Handoff: sb.handoff, TLS: tlstesting.Default(t).PrimaryConfig(),
		Budget: 5 * time.Second, Logger: newRecorder(t).logger(), Key: sealedKey,
	})
	require.NoError(t, err)
	return g
}

// grepDir returns the files under dir that hold s.
func grepDir(t *testing.T, dir, s string) []string {
	var found []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, path)
		}
		return err
	}))
	return found
}

// TestSealedHandoff saves a sealed pool to a standby that holds the key:
// the standby's replica server stores only ciphertext, the handoff
// carries the keyed digest of the saved lines instead of a file hash, and
// the standby checks the replica against it and promotes the pool,
// sealed, with the application's last commit. No file of the standby,
// the promoted pool included, holds the marker the application wrote.
func TestSealedHandoff(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	sbDir := filepath.Join(dir, "standby")
	sb := runStandbyOpts(t, ha.StandbyOptions{Coordinator: coord, Logger: newRecorder(t).logger(), Server: mirror.ServerOptions{Dir: sbDir}, Key: sealedKey})
	path := filepath.Join(dir, "app.pool")
	h, p := sealedApp(t, coord, path, sb.replica, 200)
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())

	rep, err := sealedGuard(t, coord, path, sb).Save(context.Background())
	require.NoError(t, err)
	t.Logf("save: %d bytes shipped in %v", rep.Handoff.Bytes, rep.Total)
	assert.True(t, rep.Handoff.Sealed)
	assert.NotZero(t, rep.Handoff.Digest)
	assert.True(t, rep.Listed, rep.Fallback)
	assert.Less(t, rep.Handoff.Bytes, int64(2<<20), "a listed save ships the chunks that changed")
	prom := sb.wait(t)
	assert.Equal(t, "handoff", prom.Reason)
	assert.Empty(t, grepDir(t, sbDir, marker), "plaintext in the standby's files")
	assert.Equal(t, uint64(200), notedOf(t, prom.Path))
	_, err = heap.Open(prom.Path, nil)
	require.ErrorIs(t, err, pmemgo.ErrBadKey, "the promoted pool stays sealed")
}

// TestSealedHandoffWrongDigest sends a sealed handoff whose digest is not
// that of the replica's lines: the standby finds it when it checks the
// replica with the key, and does not give the pool to the application.
func TestSealedHandoffWrongDigest(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandbyOpts(t, ha.StandbyOptions{Coordinator: coord, Logger: rec.logger(), Server: mirror.ServerOptions{Dir: filepath.Join(dir, "standby")}, Key: sealedKey})
	h, p := sealedApp(t, coord, filepath.Join(dir, "app.pool"), sb.replica, 20)
	require.NoError(t, p.Mirror().Flush(context.Background()))
	st := sb.sb.Server().Status()
	require.Len(t, st, 1)
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())

	msg := ha.Handoff{Pool: "orders", UUID: st[0].Pool, Epoch: st[0].Epoch, Seq: st[0].Seq, Sealed: true, Digest: 1}
	require.NoError(t, ha.SendHandoff(context.Background(), sb.handoff, tlstesting.Default(t).PrimaryConfig(), msg))
	err := sb.attempt(t)
	require.ErrorIs(t, err, pmemgo.ErrCorrupt)
	assert.Contains(t, err.Error(), "digests differ")
	assert.NotEmpty(t, rec.logged(slog.LevelError, "fails validation"))
}

// TestSealedHandoffToPlainReplica sends a handoff that says the pool is
// sealed to a standby whose replica holds a plain pool: the standby
// refuses it, naming the replica, and the guardian hears why.
func TestSealedHandoffToPlainReplica(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandbyOpts(t, ha.StandbyOptions{Coordinator: coord, Logger: rec.logger(), Server: mirror.ServerOptions{Dir: filepath.Join(dir, "standby")}, Key: sealedKey})
	h, p := startApp(t, coord, filepath.Join(dir, "app.pool"), sb.replica, mirror.Sync, 5)
	require.NoError(t, p.Mirror().Flush(context.Background()))
	st := sb.sb.Server().Status()
	require.Len(t, st, 1)

	msg := ha.Handoff{Pool: "orders", UUID: st[0].Pool, Epoch: st[0].Epoch, Seq: st[0].Seq, Sealed: true, Digest: 1}
	err := ha.SendHandoff(context.Background(), sb.handoff, tlstesting.Default(t).PrimaryConfig(), msg)
	require.ErrorIs(t, err, ha.ErrHandoff)
	assert.ErrorContains(t, err, "is not sealed")
	assert.True(t, sb.running(), "a refused handoff promotes nothing")
	require.NoError(t, h.Close())
}

// TestSealedStandbyRefuses checks the replicas a standby must not
// promote when the primary's lease ends without a handoff: a sealed
// replica without the key; a sealed replica into which older records of
// its lines were put back (the digest record, from the newest batch, no
// longer matches its lines); and one whose whole file was put back as
// of an older batch, digest record included (a valid older pool, which
// only the replica's journal, at a newer batch, tells apart).
func TestSealedStandbyRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    []byte
		tamper func(t *testing.T, path string, old []byte)
		want   error
		text   string
	}{
		{name: "no key", want: pmemgo.ErrBadKey, text: "no pool key"},
		{name: "records put back", key: sealedKey, tamper: putBackRecords, want: pmemgo.ErrCorrupt, text: "digest"},
		{name: "file put back", key: sealedKey, tamper: putBackFile, want: pmemgo.ErrCorrupt, text: "its journal says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			coordDir, dir := t.TempDir(), fastDir(t)
			coord := newNode(t, "coord", coordDir).coord
			sbDir := filepath.Join(dir, "standby")
			sb := runStandbyOpts(t, ha.StandbyOptions{Coordinator: coord, Logger: newRecorder(t).logger(), Server: mirror.ServerOptions{Dir: sbDir}, Key: tc.key})
			h, p := sealedApp(t, coord, filepath.Join(dir, "app.pool"), sb.replica, 5)
			require.NoError(t, p.Mirror().Flush(context.Background()))
			replica := replicaPool(t, sbDir)
			old, err := os.ReadFile(replica)
			require.NoError(t, err)
			commitNoted(t, h, 5)
			require.NoError(t, p.Mirror().Flush(context.Background()))
			if tc.tamper != nil {
				tc.tamper(t, replica, old)
			}
			p.Term().PauseRenewals()
			require.NoError(t, h.Close())
			err = sb.attempt(t)
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.text)
			t.Logf("promotion: %v", err)
		})
	}
}

// putBackRecords writes old's records back into the sealed file at path
// wherever they differ, past the header page that holds the digest
// record: each record is genuine, for its own line, from an older state.
func putBackRecords(t *testing.T, path string, old []byte) {
	t.Helper()
	cur, err := os.ReadFile(path)
	require.NoError(t, err)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	n := 0
	for off := seal.HeaderSize; off+seal.RecordSize <= min(len(cur), len(old)); off += seal.RecordSize {
		if !bytes.Equal(cur[off:off+seal.RecordSize], old[off:off+seal.RecordSize]) {
			_, err := f.WriteAt(old[off:off+seal.RecordSize], int64(off))
			require.NoError(t, err)
			n++
		}
	}
	require.NotZero(t, n, "no record changed between the two states")
	t.Logf("put back %d records", n)
}

// putBackFile writes old over the whole sealed file at path.
func putBackFile(t *testing.T, path string, old []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(old, 0)
	require.NoError(t, err)
}
