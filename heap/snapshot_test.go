package heap_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// image reads a snapshot's whole image.
func image(t *testing.T, s *heap.Snapshot) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := s.WriteTo(&b)
	require.NoError(t, err)
	require.Equal(t, s.Size(), n)
	return b.Bytes()
}

// TestSnapshotHidesLaterChanges changes the pool in every way a
// transaction can after a snapshot (logged stores, new objects, frees,
// appends, a new type, a new epoch) and checks the snapshot still shows
// the pool as it was, byte for byte, and as a pool.
func TestSnapshotHidesLaterChanges(t *testing.T) {
	for _, limit := range []int64{0, -1, 4096} {
		t.Run(fmt.Sprintf("mem-limit=%d", limit), func(t *testing.T) {
			dir := fastTempDir(t)
			h, err := heap.Open(filepath.Join(dir, "p.pool"), &heap.Options{Size: 8 << 20})
			require.NoError(t, err)
			defer h.Close()
			require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 20) }))
			want := snapshot(t, h)

			s, err := h.Snapshot(&heap.SnapshotOptions{MemLimit: limit, SpillDir: dir})
			require.NoError(t, err)
			defer s.Close()
			first := image(t, s)

			require.NoError(t, h.Update(renameAll))
			require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 100, 30) }))
			require.NoError(t, h.Update(removeHead))
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				root, err := heap.Root[Root](tx)
				if err != nil {
					return err
				}
				n := root.Head
				if err := heap.Add(tx, &n.Tags); err != nil {
					return err
				}
				n.Tags, err = heap.Append(tx, n.Tags, 7, 8, 9, 10, 11)
				if err != nil {
					return err
				}
				_, err = heap.New[Versioned](tx) // a type the snapshot's table lacks
				return err
			}))
			_, err = h.NewEpoch()
			require.NoError(t, err)
			require.NotEqual(t, want, snapshot(t, h))

			require.Equal(t, first, image(t, s), "the image must not change while transactions go on")
			st := s.Stats()
			assert.Positive(t, st.Lines)
			if limit < 0 {
				assert.Zero(t, st.MemBytes)
				assert.EqualValues(t, st.Lines*64, st.SpilledBytes)
			}

			backup := filepath.Join(dir, "backup.pool")
			require.NoError(t, s.Backup(backup))
			checkPool(t, backup)
			b, err := heap.Open(backup, &heap.Options{ReadOnly: true})
			require.NoError(t, err)
			defer b.Close()
			assert.Equal(t, want, snapshot(t, b))
			assert.Zero(t, b.Recovery().RolledBack, "a backup is a cleanly closed pool")

			sh, err := s.Open(nil)
			require.NoError(t, err)
			assert.Equal(t, want, snapshot(t, sh))
			require.NoError(t, sh.Close())
		})
	}
}

func TestSnapshotClosedWithHeap(t *testing.T) {
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	s, err := h.Snapshot(nil)
	require.NoError(t, err)
	require.NoError(t, h.Close())
	_, err = s.ReadAt(make([]byte, 64), 0)
	require.ErrorIs(t, err, pmemgo.ErrClosed)
	require.NoError(t, s.Close())
	_, err = h.Snapshot(nil)
	require.ErrorIs(t, err, pmemgo.ErrClosed)

	h, err = heap.Open(h.Path(), nil)
	require.NoError(t, err)
	defer h.Close()
	err = h.Update(func(*heap.Tx) error { _, err := h.Snapshot(nil); return err })
	require.ErrorIs(t, err, pmemgo.ErrNestedTx)
}

// Bank is the root of the snapshot stress test: transfers keep the sum of
// the balances constant, and Seq numbers the commits.
type Bank struct {
	Seq      uint64
	Balances []int64
}

const bankAccounts = 64

func bankHash(seq uint64, balances []int64) uint64 {
	var b bytes.Buffer
	fmt.Fprint(&b, seq, balances)
	return xxhash.Sum64(b.Bytes())
}

// TestBackupWhileCommitting takes backups while a writer commits
// transfers at full speed, and checks that each backup is a valid pool
// holding exactly the state of one commit.
func TestBackupWhileCommitting(t *testing.T) {
	backups := 100
	if testing.Short() {
		backups = 20
	}
	t.Run("msync", func(t *testing.T) { backupWhileCommitting(t, backups, nil) })
	// A device that does not share the pool file is backed up by reads of
	// 256 KiB in order, which the backup's snapshot keeps no line behind.
	t.Run("buffered", func(t *testing.T) { backupWhileCommitting(t, 10, device.Buffered{}) })
}

func backupWhileCommitting(t *testing.T, backups int, dev device.Mapper) {
	dir := fastTempDir(t)
	h, err := heap.Open(filepath.Join(dir, "p.pool"), &heap.Options{Size: 8 << 20, Device: dev})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		b, err := heap.Root[Bank](tx)
		if err != nil {
			return err
		}
		b.Balances, err = heap.MakeSlice[int64](tx, bankAccounts, bankAccounts)
		for i := range b.Balances {
			b.Balances[i] = 1000
		}
		return err
	}))

	var states sync.Map // seq -> hash of the balances committed with it
	var stop atomic.Bool
	writer := make(chan error, 1)
	go func() {
		r := rand.New(rand.NewPCG(1, 2))
		for !stop.Load() {
			var seq, sum uint64
			err := h.Update(func(tx *heap.Tx) error {
				b, err := heap.Root[Bank](tx)
				if err != nil {
					return err
				}
				from, to := r.IntN(bankAccounts), r.IntN(bankAccounts)
				if err := heap.AddAll(tx, b); err != nil {
					return err
				}
				if err := heap.AddSlice(tx, b.Balances); err != nil {
					return err
				}
				amount := int64(r.IntN(100))
				b.Balances[from] -= amount
				b.Balances[to] += amount
				b.Seq++
				seq, sum = b.Seq, bankHash(b.Seq, b.Balances)
				return nil
			})
			if err != nil {
				writer <- err
				return
			}
			states.Store(seq, sum)
		}
		writer <- nil
	}()

	type got struct{ seq, hash uint64 }
	var seen []got
	for i := range backups {
		path := filepath.Join(dir, fmt.Sprintf("backup-%d.pool", i))
		require.NoError(t, h.Backup(path))
		checkPool(t, path)
		b, err := heap.Open(path, &heap.Options{ReadOnly: true})
		require.NoError(t, err)
		require.NoError(t, b.View(func(tx *heap.Tx) error {
			bank, err := heap.Root[Bank](tx)
			if err != nil {
				return err
			}
			var total int64
			for _, v := range bank.Balances {
				total += v
			}
			assert.EqualValues(t, 1000*bankAccounts, total, "backup %d: the sum of the balances", i)
			seen = append(seen, got{bank.Seq, bankHash(bank.Seq, bank.Balances)})
			return nil
		}))
		require.NoError(t, b.Close())
	}
	stop.Store(true)
	require.NoError(t, <-writer)
	distinct := map[uint64]bool{}
	for i, g := range seen {
		distinct[g.seq] = true
		if g.seq == 0 {
			continue
		}
		want, ok := states.Load(g.seq)
		require.True(t, ok, "backup %d holds commit %d, which was never acknowledged", i, g.seq)
		require.Equal(t, want, g.hash, "backup %d differs from the state of commit %d", i, g.seq)
	}
	t.Logf("%d backups of %d distinct commits", len(seen), len(distinct))
	require.Greater(t, len(distinct), 1, "the writer must have committed between backups")
}

// TestCrashWithSnapshotOpen enumerates the crash points of a transaction
// while a snapshot is open: the snapshot changes nothing that reaches the
// media, and still shows the state before.
func TestCrashWithSnapshotOpen(t *testing.T) {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: crashPoolSize})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }))
	before := snapshot(t, h)
	require.NoError(t, h.Close())

	c := newCapture(true)
	h, err = heap.Open(path, &heap.Options{Device: c.emu})
	require.NoError(t, err)
	s, err := h.Snapshot(nil)
	require.NoError(t, err)
	c.armed = true
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		return errors.Join(renameAll(tx), addNodes(tx, 10, 2), removeHead(tx))
	}))
	c.armed = false
	after := snapshot(t, h)
	backup := filepath.Join(dir, "snap.pool")
	require.NoError(t, s.Backup(backup))
	require.NoError(t, s.Close())
	require.NoError(t, h.Close())
	b, err := heap.Open(backup, &heap.Options{ReadOnly: true})
	require.NoError(t, err)
	assert.Equal(t, before, snapshot(t, b))
	require.NoError(t, b.Close())

	for i, img := range c.images {
		got := reopenImage(t, dir, img)
		if got != before && got != after {
			t.Fatalf("image %d: neither before nor after:\n%s", i, got)
		}
	}
	t.Logf("%d crash images checked with a snapshot open", len(c.images))
}

// TestSnapshotInCommitHook takes a snapshot from a commit hook, at the
// boundary of the commit that ran it, as a replication mirror does: it
// holds exactly that commit's state while later commits go on.
func TestSnapshotInCommitHook(t *testing.T) {
	dir := fastTempDir(t)
	h, err := heap.Open(filepath.Join(dir, "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	var snap *heap.Snapshot
	var hookErr error
	take := true
	cancel := h.OnCommit(func() error {
		if take {
			take = false
			snap, hookErr = h.Snapshot(&heap.SnapshotOptions{Exact: true})
		}
		return nil
	})
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 4) }))
	cancel()
	require.NoError(t, hookErr)
	defer snap.Close()
	want := snapshot(t, h)
	require.NoError(t, h.Update(renameAll))
	require.NoError(t, h.Update(removeHead))

	sh, err := snap.Open(nil)
	require.NoError(t, err)
	defer sh.Close()
	assert.Equal(t, want, snapshot(t, sh), "the snapshot holds the state of the commit whose hook took it")

	// An exact image keeps the open mark as the pool has it; the default
	// one shows the pool cleanly closed.
	clean, err := h.Snapshot(nil)
	require.NoError(t, err)
	defer clean.Close()
	var exactMark, cleanMark [8]byte
	_, err = snap.ReadAt(exactMark[:], layout.OpenMarkOff)
	require.NoError(t, err)
	_, err = clean.ReadAt(cleanMark[:], layout.OpenMarkOff)
	require.NoError(t, err)
	assert.NotZero(t, layout.OpenMark(exactMark[:]))
	assert.Zero(t, layout.OpenMark(cleanMark[:]))
}
