package mirror

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/mirror/wire"
)

// TestFenceCopies damages the copies of a fencing state in turn: with one
// left the state is read from it and the damaged copy is rewritten; with
// none left, reading fails rather than start from epoch 0; an interrupted
// write (slot 0 newer) yields the newer state.
func TestFenceCopies(t *testing.T) {
	want := fence{seen: 9, epoch: 8, seq: 77, chain: wire.Chain{1, 2, 3}}
	setup := func(t *testing.T) string {
		base := filepath.Join(t.TempDir(), "p")
		f := want
		require.NoError(t, writeFence(base, &f))
		want.counter = f.counter
		return base
	}
	damage := func(t *testing.T, base string, off int) {
		b, err := os.ReadFile(fencePath(base))
		require.NoError(t, err)
		b[off] ^= 1
		require.NoError(t, os.WriteFile(fencePath(base), b, 0o644))
	}
	for _, slot := range []int{0, 1} {
		base := setup(t)
		damage(t, base, slot*fenceSlot+30)
		var bad []int
		got, exists, err := readFence(base, func(i int, err error) { bad = append(bad, i) })
		require.NoError(t, err)
		assert.True(t, exists)
		assert.Equal(t, [3]uint64{want.seen, want.epoch, want.seq}, [3]uint64{got.seen, got.epoch, got.seq})
		assert.Equal(t, want.chain, got.chain)
		assert.Equal(t, []int{slot}, bad, "the damaged copy is reported")
		bad = nil
		_, _, err = readFence(base, func(i int, err error) { bad = append(bad, i) })
		require.NoError(t, err)
		assert.Empty(t, bad, "the damaged copy was rewritten")
	}

	base := setup(t)
	damage(t, base, 30)
	damage(t, base, fenceSlot+30)
	_, exists, err := readFence(base, nil)
	assert.True(t, exists)
	assert.ErrorIs(t, err, errFenceLost)

	base = setup(t)
	newer := want
	newer.counter++
	newer.seen = 10
	var b [fenceSize]byte
	newer.encode(b[:])
	file, err := os.OpenFile(fencePath(base), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = file.WriteAt(b[:], 0)
	require.NoError(t, err)
	require.NoError(t, file.Close())
	got, _, err := readFence(base, nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(10), got.seen, "a write interrupted between the copies: slot 0 is the newer")

	_, exists, err = readFence(filepath.Join(t.TempDir(), "none"), nil)
	require.NoError(t, err)
	assert.False(t, exists)
}

// FuzzDecodeFence feeds arbitrary bytes to the fencing state decoder: it
// may refuse them but must never panic, and a state it accepts must
// re-encode to the bytes it was decoded from.
func FuzzDecodeFence(f *testing.F) {
	for _, st := range []fence{{counter: 1, seen: 2}, {counter: 5, seen: 9, epoch: 8, seq: 77, chain: wire.Chain{4}}} {
		var b [fenceSize]byte
		st.encode(b[:])
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeFence(b)
		if err != nil {
			return
		}
		var enc [fenceSize]byte
		st.encode(enc[:])
		if !bytes.Equal(enc[:], b[:fenceSize]) {
			t.Fatalf("fencing state %d re-encodes differently", st.counter)
		}
	})
}
