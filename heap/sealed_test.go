package heap_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/seal"
)

const sealedPoolSize = 2 << 20

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

// markers returns n strings that occur in no file by chance.
func markers(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("MARKER-%d-a8f3e1c97b", i)
	}
	return out
}

// writeMarkers stores each marker as the name of a node of the root list.
func writeMarkers(t testing.TB, h *heap.Heap, names []string) {
	t.Helper()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		if err := heap.Add(tx, root); err != nil {
			return err
		}
		for i, name := range names {
			n, err := heap.New[Node](tx)
			if err != nil {
				return err
			}
			n.Key = uint64(i)
			if n.Name, err = heap.NewString(tx, name); err != nil {
				return err
			}
			n.Next, root.Head = root.Head, n
			root.Count++
		}
		return nil
	}))
}

// readNames returns the names of the root list, head first.
func readNames(t testing.TB, h *heap.Heap) []string {
	t.Helper()
	var names []string
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Root](tx)
		if err != nil {
			return err
		}
		for n := root.Head; n != nil; n = n.Next {
			names = append(names, strings.Clone(n.Name))
		}
		return nil
	}))
	return names
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i := range s {
		out[len(s)-1-i] = s[i]
	}
	return out
}

// requireNoPlaintext fails if any marker occurs in the file at path.
func requireNoPlaintext(t *testing.T, path string, names []string) {
	t.Helper()
	b := readFile(t, path)
	for _, m := range names {
		require.False(t, bytes.Contains(b, []byte(m)), "%s holds marker %q in plaintext", path, m)
	}
	require.False(t, bytes.Contains(b, []byte(layout.Magic)), "%s holds a plaintext pool header", path)
}

// sealedPool creates a sealed pool holding the markers, closed.
func sealedPool(t *testing.T, key []byte, names []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sealed.pool")
	h, err := heap.Open(path, &heap.Options{Size: sealedPoolSize, Key: key})
	require.NoError(t, err)
	require.True(t, h.Sealed())
	writeMarkers(t, h, names)
	require.NoError(t, h.Close())
	return path
}

func TestSealedPoolHoldsNoPlaintext(t *testing.T) {
	key, names := newKey(t), markers(20)
	path := sealedPool(t, key, names)
	requireNoPlaintext(t, path, names)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, seal.FileSize(sealedPoolSize), st.Size())

	for _, opts := range []heap.Options{
		{Key: key},
		{Key: key, ForceRelocate: true},
		{Key: key, ReadOnly: true},
		{Key: key, VerifyPointers: true},
	} {
		h, err := heap.Open(path, &opts)
		require.NoError(t, err, "%+v", opts)
		assert.Equal(t, reversed(names), readNames(t, h))
		require.NoError(t, h.Close())
	}
	requireNoPlaintext(t, path, names)

	// Commits after a reopen are sealed too, and survive the next one.
	h, err := heap.Open(path, &heap.Options{Key: key})
	require.NoError(t, err)
	more := []string{"MARKER-late-5b1c0e"}
	writeMarkers(t, h, more)
	require.NoError(t, h.Close())
	requireNoPlaintext(t, path, more)
	h, err = heap.Open(path, &heap.Options{Key: key, ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, append(more, reversed(names)...), readNames(t, h))
}

func TestSealedPoolKeyErrors(t *testing.T) {
	key := newKey(t)
	sealed := sealedPool(t, key, markers(2))
	plain := filepath.Join(t.TempDir(), "plain.pool")
	h, err := heap.Open(plain, &heap.Options{Size: sealedPoolSize})
	require.NoError(t, err)
	require.NoError(t, h.Close())

	for _, tc := range []struct {
		name, path string
		key        []byte
		want       string
	}{
		{"wrong key", sealed, newKey(t), "key id"},
		{"no key", sealed, nil, "open it with its key"},
		{"key for a plain pool", plain, key, "not a sealed pool file"},
		{"short key", sealed, key[:16], "16 bytes"},
		{"short key read-only", sealed, key[:31], "31 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := heap.Open(tc.path, &heap.Options{Key: tc.key})
			if h != nil {
				h.Close()
			}
			require.ErrorIs(t, err, pmemgo.ErrBadKey)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestSealedPoolTamper changes the sealed file in the ways an attacker
// with the file but not the key could, and requires each to be refused
// with an error naming the file offset.
func TestSealedPoolTamper(t *testing.T) {
	key, names := newKey(t), markers(5)
	path := sealedPool(t, key, names)
	orig := readFile(t, path)
	other := readFile(t, sealedPool(t, key, names))
	// The records of the state line and of the first line of the first
	// slab: both written, and read by every open.
	stateRec := seal.RecordOff(layout.StateOff)
	hdrRec := seal.RecordOff(0)
	require.False(t, seal.IsBlank(orig[stateRec:]))
	require.False(t, seal.IsBlank(orig[hdrRec:]))
	rec := func(b []byte, off int64) []byte { return b[off : off+seal.RecordSize] }

	for _, tc := range []struct {
		name   string
		change func(b []byte)
		want   string
	}{
		{"bit flip in ciphertext", func(b []byte) { b[stateRec+40] ^= 1 }, fmt.Sprintf("file offset %d", stateRec)},
		{"bit flip in tag", func(b []byte) { b[stateRec+100] ^= 0x80 }, fmt.Sprintf("file offset %d", stateRec)},
		{"bit flip in salt", func(b []byte) { b[stateRec+3] ^= 4 }, fmt.Sprintf("file offset %d", stateRec)},
		{"records swapped", func(b []byte) {
			a, c := bytes.Clone(rec(b, hdrRec)), bytes.Clone(rec(b, stateRec))
			copy(rec(b, hdrRec), c)
			copy(rec(b, stateRec), a)
		}, fmt.Sprintf("file offset %d", hdrRec)},
		{"record from another pool, same key and offset", func(b []byte) {
			copy(rec(b, stateRec), rec(other, stateRec))
		}, fmt.Sprintf("file offset %d", stateRec)},
		{"header bit flip", func(b []byte) { b[41] ^= 1 }, "sealed-file header at offset 0"},
		{"truncated", nil, "its header records"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "t.pool")
			b := bytes.Clone(orig)
			if tc.change == nil {
				b = b[:len(b)-seal.RecordSize]
			} else {
				tc.change(b)
			}
			require.NoError(t, os.WriteFile(p, b, 0o600))
			for _, ro := range []bool{false, true} {
				h, err := heap.Open(p, &heap.Options{Key: key, ReadOnly: ro})
				if h != nil {
					h.Close()
				}
				require.Error(t, err)
				assert.NotErrorIs(t, err, pmemgo.ErrBadKey)
				assert.Contains(t, err.Error(), tc.want)
			}
			assert.Equal(t, b, readFile(t, p), "a refused open must not write")
		})
	}
}

func TestSealedPoolBackup(t *testing.T) {
	key, names := newKey(t), markers(8)
	path := sealedPool(t, key, names)
	h, err := heap.Open(path, &heap.Options{Key: key})
	require.NoError(t, err)
	backup := filepath.Join(t.TempDir(), "backup.pool")
	require.NoError(t, h.Backup(backup))
	snap, err := h.Snapshot(nil)
	require.NoError(t, err)
	sh, err := snap.Open(&heap.Options{Key: key})
	require.NoError(t, err)
	assert.Equal(t, reversed(names), readNames(t, sh))
	require.NoError(t, sh.Close())
	require.NoError(t, snap.Close())
	require.NoError(t, h.Close())

	requireNoPlaintext(t, backup, names)
	h, err = heap.Open(backup, &heap.Options{Key: key, ReadOnly: true})
	require.NoError(t, err)
	checked, ok := device.SealedDigestChecked(h.Device())
	require.NoError(t, h.Close())
	assert.True(t, ok && checked, "a backup carries the exact digest of its lines, which its open checks")

	h, err = heap.Open(backup, &heap.Options{Key: key, ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	assert.Equal(t, reversed(names), readNames(t, h))
}

// TestSealedPoolReopensAtItsBase reopens a sealed pool: the plaintext is
// mapped at its previous base, as a plain pool's mapping is, so that the
// open swizzles nothing.
func TestSealedPoolReopensAtItsBase(t *testing.T) {
	key := newKey(t)
	path := sealedPool(t, key, markers(3))
	for range 3 {
		h, err := heap.Open(path, &heap.Options{Key: key})
		require.NoError(t, err)
		relocated := h.Recovery().Relocated
		require.NoError(t, h.Close())
		require.False(t, relocated, "a sealed pool reopened away from its base")
	}
}
