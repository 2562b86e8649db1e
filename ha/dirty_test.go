package ha_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/filetest"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// verifyingGuard is newGuard with GuardOptions.Verify: the standby
// refuses a handoff whose pool is not byte for byte the guardian's.
func verifyingGuard(t *testing.T, coord ha.Coordinator, path string, sb *standbyRun, rec *recorder) *ha.Guard {
	t.Helper()
	g, err := ha.NewGuard(ha.GuardOptions{
		PoolPath: path, Pool: "orders", Node: "a", Coordinator: coord,
		Standby: sb.replica, Handoff: sb.handoff, TLS: tlstesting.Default(t).PrimaryConfig(),
		Budget: 10 * time.Second, Verify: true, Logger: rec.logger(),
	})
	require.NoError(t, err)
	return g
}

// block is an object of a page, so that a few hundred of them spread over
// several chunks of the dirty-chunk record.
type block struct{ B [4096]byte }

// writeBlocks allocates and writes 300 blocks in one transaction.
func writeBlocks(t *testing.T, h *heap.Heap) {
	t.Helper()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		for i := range 300 {
			b, err := heap.New[block](tx)
			if err != nil {
				return err
			}
			b.B[i] = byte(i)
		}
		return nil
	}))
}

// startDisconnected runs an application that replicates 10 commits in
// sync mode, loses its link to the standby, and goes on alone: 300
// blocks allocated and written, then its counter at 10+extra. It stops
// (its lease no longer renewed, its heap closed) and returns the pool's
// path.
func startDisconnected(t *testing.T, coord ha.Coordinator, dir string, sb *standbyRun, extra int) string {
	t.Helper()
	path := filepath.Join(dir, "app.pool")
	h, p := startApp(t, coord, path, sb.replica, mirror.Sync, 10)
	require.NoError(t, p.Mirror().Close())
	writeBlocks(t, h)
	for range extra {
		_, err := increment(h)
		require.NoError(t, err)
	}
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())
	return path
}

// TestListedSave saves a pool that changed while its standby was out of
// reach: with the primary's dirty-chunk record, only the chunks listed
// are shipped, and the standby's pool is byte for byte the guardian's
// (Verify hashes both); when the record cannot be used, the guardian
// says why and ships what differs by chunk hashes, and the result is the
// same.
func TestListedSave(t *testing.T) {
	for _, tc := range []struct {
		name string
		// spoil does something to the record or the pool after the
		// application stopped.
		spoil  func(t *testing.T, path, other string)
		reason string
	}{
		{name: "record"},
		{name: "missing", reason: "no such file", spoil: func(t *testing.T, path, _ string) {
			require.NoError(t, os.Remove(path+".dirty"))
		}},
		{name: "damaged", reason: "checksum", spoil: func(t *testing.T, path, _ string) {
			filetest.FlipByte(t, path+".dirty", 41)
		}},
		{name: "other pool", reason: "record of pool", spoil: func(t *testing.T, path, other string) {
			b, err := os.ReadFile(other + ".dirty")
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path+".dirty", b, 0o644))
		}},
		{name: "written without a record", reason: "kept no record", spoil: func(t *testing.T, path, _ string) {
			h, err := heap.Open(path, nil)
			require.NoError(t, err)
			_, err = increment(h)
			require.NoError(t, err)
			require.NoError(t, h.Close())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			coordDir, dir := t.TempDir(), fastDir(t)
			coord := newNode(t, "coord", coordDir).coord
			rec := newRecorder(t)
			sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
			path := startDisconnected(t, coord, dir, sb, 5)
			want := uint64(15)
			if tc.spoil != nil {
				other := filepath.Join(dir, "other.pool")
				h, err := heap.Open(other, &heap.Options{Size: 8 << 20})
				require.NoError(t, err)
				c, err := ha.NewLeaseFile(t.TempDir(), ha.LeaseFileOptions{})
				require.NoError(t, err)
				defer c.Close()
				_, addr := startReplica(t, filepath.Join(dir, "other"), nil)
				_, err = ha.StartPrimary(context.Background(), h, ha.PrimaryOptions{Coordinator: c, Pool: "other", Node: "a", Mirror: syncMirror(t, addr, nil)})
				require.NoError(t, err)
				require.NoError(t, h.Close())
				tc.spoil(t, path, other)
				if tc.name == "written without a record" {
					want++
				}
			}
			rep, err := verifyingGuard(t, coord, path, sb, rec).Save(context.Background())
			require.NoError(t, err)
			t.Logf("save: listed %v (%s), %d bytes, total %v", rep.Listed, rep.Fallback, rep.Handoff.Bytes, rep.Total)
			prom := sb.wait(t)
			assert.Equal(t, "handoff", prom.Reason)
			assert.Equal(t, want, counterOf(t, prom.Path))
			if tc.reason == "" {
				assert.True(t, rep.Listed, rep.Fallback)
				assert.Less(t, rep.Handoff.Bytes, int64(4<<20))
				assert.Empty(t, rec.logged(0, "cannot be used"))
				return
			}
			assert.False(t, rep.Listed)
			assert.Contains(t, rep.Fallback, tc.reason)
			assert.NotEmpty(t, rec.logged(0, "dirty-chunk record cannot be used"))
		})
	}
}

// TestRecordMissingChunkCaught clears the mark of a chunk that changed
// after the standby's batch: the listed save does not ship it, and the
// standby, comparing the hashes of both pools, refuses the handoff.
func TestRecordMissingChunkCaught(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
	path := startDisconnected(t, coord, dir, sb, 0)

	f, err := os.OpenFile(path+".dirty", os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	marks := make([]byte, fi.Size()-4096)
	_, err = f.ReadAt(marks, 4096)
	require.NoError(t, err)
	// The last chunk marked holds blocks, not metadata, which the
	// guardian ships whatever the record says.
	last := -1
	for i := 0; i < len(marks)/8; i++ {
		if binary.LittleEndian.Uint64(marks[8*i:]) == math.MaxUint64 {
			last = i
		}
	}
	require.Greater(t, last, 1, "no chunk marked changed")
	_, err = f.WriteAt(make([]byte, 8), int64(4096+8*last))
	require.NoError(t, err)

	_, err = verifyingGuard(t, coord, path, sb, rec).Save(context.Background())
	require.ErrorIs(t, err, ha.ErrHandoff)
	assert.Contains(t, err.Error(), "pool hash")
	assert.NotEmpty(t, rec.logged(0, "handoff refused"))
}

// TestListedSaveStandbyWithoutBase saves to a standby that never held the
// application's epoch (the application replicated elsewhere): the record
// is valid, but the standby lacks the batch it starts from, so the save
// sends what differs by chunk hashes and says so.
func TestListedSaveStandbyWithoutBase(t *testing.T) {
	coordDir, dir := t.TempDir(), fastDir(t)
	coord := newNode(t, "coord", coordDir).coord
	rec := newRecorder(t)
	sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
	_, elsewhere := startReplica(t, filepath.Join(dir, "elsewhere"), nil)
	path := filepath.Join(dir, "app.pool")
	h, p := startApp(t, coord, path, elsewhere, mirror.Sync, 20)
	p.Term().PauseRenewals()
	require.NoError(t, h.Close())

	rep, err := verifyingGuard(t, coord, path, sb, rec).Save(context.Background())
	require.NoError(t, err)
	assert.False(t, rep.Listed)
	assert.Contains(t, rep.Fallback, "does not hold the batch the record starts from")
	assert.NotEmpty(t, rec.logged(0, "does not hold the batch the record starts from"))
	prom := sb.wait(t)
	assert.Equal(t, uint64(20), counterOf(t, prom.Path))
}

// TestGenExpected checks which undo log generations of the pool file a
// record that expects generation 10 accepts: its own and the two before
// it (stores that had not reached the file when the process died), and
// its own retired by a recovery; not a generation that an open of the
// pool from any of those, followed by a commit, leaves.
func TestGenExpected(t *testing.T) {
	const want = 10
	for gen, ok := range map[uint64]bool{
		want: true, want - 1: true, want - 2: true, layout.RetireGen(want): true,
		want - 3: false, want + 1: false, layout.RetireGen(want) + 1: false,
		layout.RetireGen(want-1) + 2: false, 0: false,
	} {
		assert.Equal(t, ok, ha.GenExpected(gen, want), "generation %d", gen)
	}
}

// TestListedSaveAfterGrowth grows the pool of an application whose
// standby follows it, and then of one whose link to the standby is
// down, before the application goes on alone and stops: the dirty-chunk
// record follows the growth, so the guardian's save is listed when the
// standby's copy grew with the pool, and otherwise a snapshot of the new
// size against the standby's smaller copy (the new part and the chunks
// that changed); either way the standby's pool is the guardian's, byte
// for byte.
func TestListedSaveAfterGrowth(t *testing.T) {
	for _, connected := range []bool{true, false} {
		name := "standby grew"
		if !connected {
			name = "standby did not grow"
		}
		t.Run(name, func(t *testing.T) {
			coordDir, dir := t.TempDir(), fastDir(t)
			coord := newNode(t, "coord", coordDir).coord
			rec := newRecorder(t)
			sb := runStandby(t, coord, filepath.Join(dir, "standby"), rec)
			path := filepath.Join(dir, "app.pool")
			h, p := startApp(t, coord, path, sb.replica, mirror.Sync, 10)
			if !connected {
				require.NoError(t, p.Mirror().Close())
			}
			require.NoError(t, h.Grow(16<<20))
			for range 5 {
				_, err := increment(h)
				require.NoError(t, err)
			}
			if connected {
				require.NoError(t, p.Mirror().Close())
			}
			writeBlocks(t, h)
			_, err := increment(h)
			require.NoError(t, err)
			p.Term().PauseRenewals()
			require.NoError(t, h.Close())
			hdr := readDirtyHeaderSize(t, path)
			assert.EqualValues(t, 16<<20, hdr, "the record's pool size")

			rep, err := verifyingGuard(t, coord, path, sb, rec).Save(context.Background())
			require.NoError(t, err)
			t.Logf("save: listed %v (%s), %d bytes, total %v", rep.Listed, rep.Fallback, rep.Handoff.Bytes, rep.Total)
			prom := sb.wait(t)
			assert.Equal(t, "handoff", prom.Reason)
			assert.Equal(t, uint64(16), counterOf(t, prom.Path))
			assert.Empty(t, rec.logged(0, "cannot be used"))
			if connected {
				assert.True(t, rep.Listed, rep.Fallback)
				assert.Less(t, rep.Handoff.Bytes, int64(4<<20))
			} else {
				// A delta against the standby's smaller copy: the new
				// part and the chunks that changed.
				assert.False(t, rep.Listed)
				assert.GreaterOrEqual(t, rep.Handoff.Bytes, int64(8<<20))
				assert.Less(t, rep.Handoff.Bytes, int64(16<<20))
			}
		})
	}
}

// readDirtyHeaderSize returns the pool size the dirty-chunk record of
// the pool at path says.
func readDirtyHeaderSize(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path + ".dirty")
	require.NoError(t, err)
	return binary.LittleEndian.Uint64(b[32:])
}
