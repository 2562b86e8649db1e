package heap_test

import (
	"bytes"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// openAccounts creates a small pool holding one array of n accounts and
// returns it with the array and the pool offset of each account.
func openAccounts(t *testing.T, n int) (*heap.Heap, []snapAccount, []int64) {
	t.Helper()
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 4 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	var accts []snapAccount
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[snapRoot](tx)
		if err != nil {
			return err
		}
		if accts, err = heap.MakeSlice[snapAccount](tx, n, n); err != nil {
			return err
		}
		for i := range accts {
			accts[i].Balance = 100
		}
		if err := heap.Add(tx, r); err != nil {
			return err
		}
		r.Accounts, err = heap.Append(tx, r.Accounts, accts)
		return err
	}))
	base := uintptr(unsafe.Pointer(&h.Device().Bytes()[0]))
	offs := make([]int64, n)
	for i := range accts {
		offs[i] = int64(addrOf(&accts[i]) - base)
	}
	return h, accts, offs
}

// setBalance commits new balances for the accounts at the given indexes.
func setBalance(t *testing.T, h *heap.Heap, accts []snapAccount, v int64, idx ...int) {
	t.Helper()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		for _, i := range idx {
			if err := heap.Set(tx, &accts[i].Balance, v); err != nil {
				return err
			}
		}
		return nil
	}))
}

// balanceAt reads the balance in an account's bytes.
func balanceAt(b []byte) int64 { return *(*int64)(unsafe.Pointer(&b[0])) }

// TestSnapshotRanges checks a snapshot limited to some ranges: it keeps
// the lines of those ranges only, and reads them as of the snapshot, one
// at a time or all at once.
func TestSnapshotRanges(t *testing.T) {
	h, accts, offs := openAccounts(t, 8)
	kept := []int{1, 2, 5}
	var ranges []heap.Extent
	for _, i := range kept {
		ranges = append(ranges, heap.Extent{Off: offs[i], Len: 64})
	}
	s, err := h.Snapshot(&heap.SnapshotOptions{Exact: true, Ranges: ranges})
	require.NoError(t, err)
	defer s.Close()
	setBalance(t, h, accts, 7, 0, 1, 2, 3, 4, 5, 6, 7)
	setBalance(t, h, accts, 9, 2, 3)

	bufs := make([][]byte, len(kept))
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	offsKept := []int64{offs[1], offs[2], offs[5]}
	require.NoError(t, s.ReadRanges(bufs, offsKept))
	for i, b := range bufs {
		assert.EqualValues(t, 100, balanceAt(b), "account %d", kept[i])
		one := make([]byte, 64)
		_, err := s.ReadAt(one, offsKept[i])
		require.NoError(t, err)
		assert.Equal(t, b, one)
	}
	// The accounts' lines, and none of the lines the commits changed
	// elsewhere (the other accounts, the undo log).
	assert.Equal(t, len(kept), s.Stats().Lines)

	err = s.ReadRanges(bufs[:2], []int64{offs[2], offs[1]})
	assert.ErrorIs(t, err, pmemgo.ErrInvalidOptions, "ranges out of order")
	_, err = h.Snapshot(&heap.SnapshotOptions{Ranges: []heap.Extent{{Off: offs[2], Len: 64}, {Off: offs[1], Len: 64}}})
	assert.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
	_, err = h.Snapshot(&heap.SnapshotOptions{Ranges: []heap.Extent{{Off: 4 << 20, Len: 64}}})
	assert.ErrorIs(t, err, pmemgo.ErrInvalidOptions)
}

// TestSnapshotOnFull checks that a snapshot whose kept lines would pass
// MemLimit calls OnFull before the line changes, still reading as of the
// snapshot, and is closed once OnFull returns.
func TestSnapshotOnFull(t *testing.T) {
	h, accts, offs := openAccounts(t, 4)
	var s *heap.Snapshot
	calls := 0
	var during []int64
	onFull := func() {
		calls++
		bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}
		require.NoError(t, s.ReadRanges(bufs, offs[:3]))
		for _, b := range bufs {
			during = append(during, balanceAt(b))
		}
	}
	var err error
	s, err = h.Snapshot(&heap.SnapshotOptions{
		Exact: true, MemLimit: 64, OnFull: onFull,
		Ranges: []heap.Extent{{Off: offs[0], Len: 64}, {Off: offs[1], Len: 64}, {Off: offs[2], Len: 64}},
	})
	require.NoError(t, err)
	defer s.Close()

	setBalance(t, h, accts, 5, 0)
	assert.Zero(t, calls, "one line fits")
	setBalance(t, h, accts, 6, 1, 2)
	assert.Equal(t, 1, calls)
	assert.Equal(t, []int64{100, 100, 100}, during, "OnFull sees the snapshot's state")
	_, err = s.ReadAt(make([]byte, 64), offs[0])
	assert.ErrorIs(t, err, pmemgo.ErrClosed, "closed once OnFull returned")
	setBalance(t, h, accts, 7, 0, 1, 2)
	assert.Equal(t, 1, calls)
}

// TestSnapshotKeepsManyLines changes 4 MiB of lines after a snapshot, so
// that it keeps them in many blocks, and checks the image is unchanged.
func TestSnapshotKeepsManyLines(t *testing.T) {
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 16 << 20, LogSize: 1 << 20})
	require.NoError(t, err)
	defer h.Close()
	var data []byte
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		data, err = heap.MakeSlice[byte](tx, 4<<20, 4<<20)
		return err
	}))
	s, err := h.Snapshot(nil)
	require.NoError(t, err)
	defer s.Close()
	before := image(t, s)
	const step = 256 << 10
	for off := 0; off < len(data); off += step {
		require.NoError(t, h.Update(func(tx *heap.Tx) error {
			part := data[off : off+step]
			if err := heap.AddSlice(tx, part); err != nil {
				return err
			}
			for i := range part {
				part[i] = 0xa5
			}
			return nil
		}))
	}
	assert.GreaterOrEqual(t, s.Stats().Lines, len(data)/64)
	assert.True(t, bytes.Equal(before, image(t, s)), "the image changed")
}
