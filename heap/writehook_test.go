package heap_test

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
)

type hooked struct {
	N    uint64
	Next *hooked
}

// TestOnWrite checks that a write hook is told of every range a
// transaction changes before it changes: the field set and the object
// allocated still hold their old bytes when the hook hears of them, and a
// cancelled hook hears nothing.
func TestOnWrite(t *testing.T) {
	h, err := heap.Open(filepath.Join(fastTempDir(t), "p.pool"), &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	defer h.Close()
	var root *hooked
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		root, err = heap.Root[hooked](tx)
		return err
	}))
	field := uint64(uintptr(unsafe.Pointer(&root.N)) - h.Base())
	mem := h.Device().Bytes()
	type seen struct{ off, n, old uint64 }
	var heard []seen
	cancel := h.OnWrite(func(off, n uint64) {
		s := seen{off: off, n: n}
		if off <= field && field+8 <= off+n {
			s.old = binary.LittleEndian.Uint64(mem[field:])
		}
		heard = append(heard, s)
	})
	var child *hooked
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		if err := heap.Set(tx, &root.N, 7); err != nil {
			return err
		}
		child, err = heap.New[hooked](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &root.Next, child)
	}))
	covered := func(off uint64) (bool, uint64) {
		for _, s := range heard {
			if s.off <= off && off < s.off+s.n {
				return true, s.old
			}
		}
		return false, 0
	}
	ok, old := covered(field)
	require.True(t, ok, "the field set was not reported")
	assert.Zero(t, old, "the field was reported after it changed")
	ok, _ = covered(uint64(uintptr(unsafe.Pointer(child)) - h.Base()))
	assert.True(t, ok, "the object allocated was not reported")

	cancel()
	heard = nil
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return heap.Set(tx, &root.N, 8) }))
	assert.Empty(t, heard)
}
