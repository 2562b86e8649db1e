package heap_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
)

// GrowRoot heads a chain of chunks, newest first, so that chunks made
// after a growth point at chunks made before it.
type GrowRoot struct {
	Last  *GrowChunk
	Count uint64
}

// GrowChunk is one object of the fill: its payload and name derive from
// Seq, so that every byte can be checked after a reopen.
type GrowChunk struct {
	Seq  uint64
	Prev *GrowChunk
	Data []byte
	Name string
}

const (
	growChunkBytes  = 4000
	growChunksPerTx = 256
)

// growTarget is the size the fill test grows a 1 MiB pool to: 1 GiB in a
// full run, 64 MiB with -short or under the race detector.
func growTarget() int64 {
	if testing.Short() || raceEnabled {
		return 64 << 20
	}
	return 1 << 30
}

func chunkByte(seq uint64, k int) byte { return byte(seq*31 + uint64(k)*7) }

// addChunks links n new chunks at the head of the chain.
func addChunks(tx *heap.Tx, n int) error {
	root, err := heap.Root[GrowRoot](tx)
	if err != nil {
		return err
	}
	if err := heap.Add(tx, root); err != nil {
		return err
	}
	for range n {
		c, err := heap.New[GrowChunk](tx)
		if err != nil {
			return err
		}
		c.Seq, c.Prev = root.Count, root.Last
		if c.Data, err = heap.MakeSlice[byte](tx, growChunkBytes, growChunkBytes); err != nil {
			return err
		}
		for k := range c.Data {
			c.Data[k] = chunkByte(c.Seq, k)
		}
		if c.Name, err = heap.NewString(tx, "chunk-"+strconv.FormatUint(c.Seq, 10)); err != nil {
			return err
		}
		root.Last = c
		root.Count++
	}
	return nil
}

// verifyChunks checks every chunk of the chain, and that it holds want.
func verifyChunks(h *heap.Heap, want uint64) error {
	return h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[GrowRoot](tx)
		if err != nil {
			return err
		}
		if root.Count != want {
			return fmt.Errorf("root counts %d chunks, want %d", root.Count, want)
		}
		seq := want
		for c := root.Last; c != nil; c = c.Prev {
			seq--
			if c.Seq != seq || c.Name != "chunk-"+strconv.FormatUint(seq, 10) || len(c.Data) != growChunkBytes {
				return fmt.Errorf("chunk %d: seq %d, name %q, %d bytes", seq, c.Seq, c.Name, len(c.Data))
			}
			for k, b := range c.Data {
				if b != chunkByte(seq, k) {
					return fmt.Errorf("chunk %d: byte %d is %d", seq, k, b)
				}
			}
		}
		if seq != 0 {
			return fmt.Errorf("chain ends with %d chunks missing", seq)
		}
		return nil
	})
}

// fillChunks adds chunks until the pool refuses to grow further, and
// returns how many it holds.
func fillChunks(t *testing.T, h *heap.Heap) uint64 {
	t.Helper()
	var count uint64
	for {
		err := h.Update(func(tx *heap.Tx) error { return addChunks(tx, growChunksPerTx) })
		if errors.Is(err, pmemgo.ErrNoSpace) {
			break
		}
		require.NoError(t, err)
		count += growChunksPerTx
	}
	// The last batch did not fit whole; single chunks fill the rest.
	for {
		err := h.Update(func(tx *heap.Tx) error { return addChunks(tx, 1) })
		if errors.Is(err, pmemgo.ErrNoSpace) {
			return count
		}
		require.NoError(t, err)
		count++
	}
}

// TestGrowFillThroughManyGrowths fills a 1 MiB pool to its maximum size,
// growth after growth, with objects that point at objects made before
// each growth; then reopens it in this process at the same base and in
// other processes at the same and at a new base, checking every byte.
func TestGrowFillThroughManyGrowths(t *testing.T) {
	if path := os.Getenv("PMEMGO_GROW_CHILD"); path != "" {
		growChild(t, path)
		return
	}
	target := growTarget()
	path := filepath.Join(fastTempDir(t), "grow.pool")
	h, err := heap.Open(path, &heap.Options{Size: 1 << 20, MaxSize: target})
	require.NoError(t, err)
	base := h.Base()
	var first *GrowChunk
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		if err := addChunks(tx, 1); err != nil {
			return err
		}
		root, err := heap.Root[GrowRoot](tx)
		first = root.Last
		return err
	}))
	count := 1 + fillChunks(t, h)
	st := h.Stats()
	assert.Equal(t, uint64(target), st.Size, "the pool grew to its maximum size")
	assert.Equal(t, uint64(target), st.MaxSize)
	assert.GreaterOrEqual(t, st.Growths, 6, "1 MiB doubles at least 6 times to reach 64 MiB")
	assert.Equal(t, base, h.Base(), "growing never moves the pool")
	require.NoError(t, h.View(func(tx *heap.Tx) error {
		// A pointer taken before the growths still reads the first chunk.
		if first.Seq != 0 || first.Name != "chunk-0" {
			return fmt.Errorf("first chunk reads seq %d name %q", first.Seq, first.Name)
		}
		return nil
	}))
	require.NoError(t, verifyChunks(h, count))
	t.Logf("%d chunks in %d bytes after %d growths", count, st.Size, st.Growths)
	require.NoError(t, h.Close())
	checkPool(t, path)

	h, err = heap.Open(path, nil)
	require.NoError(t, err)
	assert.False(t, h.Recovery().Relocated, "a grown pool reopens at its base")
	assert.Equal(t, base, h.Base())
	assert.Equal(t, uint64(target), h.Stats().Size)
	require.NoError(t, verifyChunks(h, count))
	require.NoError(t, h.Close())

	for _, relocate := range []bool{false, true} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGrowFillThroughManyGrowths$", "-test.v")
		cmd.Env = append(os.Environ(), "PMEMGO_GROW_CHILD="+path, "PMEMGO_GROW_COUNT="+strconv.FormatUint(count, 10),
			"PMEMGO_GROW_RELOCATE="+strconv.FormatBool(relocate))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Run(), "child (relocate %v):\n%s", relocate, out.String())
		require.Contains(t, out.String(), fmt.Sprintf("verified %d chunks", count), out.String())
		if relocate {
			require.Contains(t, out.String(), "relocated true")
		}
		t.Logf("child: %s", lineWith(out.String(), "verified"))
	}
	checkPool(t, path)
}

func growChild(t *testing.T, path string) {
	count, err := strconv.ParseUint(os.Getenv("PMEMGO_GROW_COUNT"), 10, 64)
	require.NoError(t, err)
	relocate := os.Getenv("PMEMGO_GROW_RELOCATE") == "true"
	h, err := heap.Open(path, &heap.Options{ForceRelocate: relocate})
	require.NoError(t, err)
	defer h.Close()
	r := h.Recovery()
	if relocate {
		// Without ForceRelocate the child lands at the old base when
		// nothing of its own occupies it, which it cannot be sure of.
		require.True(t, r.Relocated && r.NewBase != r.OldBase, "the child did not land at a new base")
	}
	require.NoError(t, verifyChunks(h, count))
	fmt.Printf("verified %d chunks: relocated %v, old base %#x, new base %#x, %d pointers rewritten\n",
		count, r.Relocated, r.OldBase, r.NewBase, r.Swizzle.Pointers)
}
