package heap

import (
	"bytes"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// changingWriter commits a change ahead of and behind the part of the
// image being written, each time a chunk arrives.
type changingWriter struct {
	t      *testing.T
	h      *Heap
	data   []byte
	base   int64 // pool offset of data[0]
	w      bytes.Buffer
	writes int
}

func (c *changingWriter) Write(p []byte) (int, error) {
	at := int64(c.w.Len()) - c.base // where this chunk starts, in data
	c.writes++
	require.NoError(c.t, c.h.Update(func(tx *Tx) error {
		for _, i := range []int64{at - readChunk/2 + lineSize, at + 3*readChunk/2} {
			if i >= 0 && i < int64(len(c.data)) {
				if err := Set(tx, &c.data[i], byte(c.writes)); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	return c.w.Write(p)
}

// TestSnapshotReadOnce checks that a snapshot read once in order, as
// Heap.Backup reads its own, keeps no line behind the read and still
// writes the image of its commit.
func TestSnapshotReadOnce(t *testing.T) {
	h, err := Open(filepath.Join(t.TempDir(), "p.pool"), &Options{Size: 4 << 20})
	require.NoError(t, err)
	defer h.Close()
	var data []byte
	require.NoError(t, h.Update(func(tx *Tx) error {
		data, err = MakeSlice[byte](tx, 2<<20, 2<<20)
		return err
	}))
	once, err := h.Snapshot(nil)
	require.NoError(t, err)
	defer once.Close()
	once.once = true
	full, err := h.Snapshot(nil)
	require.NoError(t, err)
	defer full.Close()

	c := &changingWriter{t: t, h: h, data: data, base: int64(uintptr(unsafe.Pointer(&data[0])) - uintptr(unsafe.Pointer(&h.mem[0])))}
	_, err = once.WriteTo(c)
	require.NoError(t, err)
	var want bytes.Buffer
	_, err = full.WriteTo(&want)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want.Bytes(), c.w.Bytes()), "the image of the snapshot read once")
	// Every commit changed a line ahead, kept by both, and one behind,
	// kept only by the snapshot that is read again.
	assert.Less(t, once.Stats().Lines, full.Stats().Lines-c.writes/2)
}
