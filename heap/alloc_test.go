package heap_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

// bigRoot keeps a large array reachable across transactions.
type bigRoot struct {
	Data []byte
}

// TestLargeExtentReuse frees a large extent and allocates one larger than
// it that fits only if the freed run joins the never-used slabs above it:
// in the same open, after a reopen from the slab summary, after a reopen
// that validates every slab header, and after a relocating reopen. It is
// the case of issue 8 (a 17 MiB string freed, then 30 MiB in a 40 MiB
// pool) scaled down by four, since commits hash what they write.
func TestLargeExtentReuse(t *testing.T) {
	reopens := []struct {
		name string
		opts *heap.Options
	}{
		{"same open", nil},
		{"summary", &heap.Options{}},
		{"full validation", &heap.Options{FullValidation: true}},
		{"relocated", &heap.Options{ForceRelocate: true}},
	}
	for _, tc := range reopens {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(fastTempDir(t), "big.pool")
			h, err := heap.Open(path, &heap.Options{Size: 10 << 20})
			require.NoError(t, err)
			total := h.Stats().SlabsTotal
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				r, err := heap.Root[bigRoot](tx)
				if err != nil {
					return err
				}
				r.Data, err = heap.MakeSlice[byte](tx, 17<<18, 17<<18)
				return err
			}))
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				r, err := heap.Root[bigRoot](tx)
				if err != nil {
					return err
				}
				if err := heap.FreeSlice(tx, r.Data); err != nil {
					return err
				}
				return heap.Set(tx, &r.Data, nil)
			}))
			assert.Equal(t, 1, h.Stats().SlabsUsed, "only the root's slab is used")
			if tc.opts != nil {
				require.NoError(t, h.Close())
				checkPool(t, path)
				_, st := poolMeta(t, readFile(t, path))
				assert.Equal(t, uint32(1), st.SlabHigh, "freeing the top extent lowers the high-water mark")
				h, err = heap.Open(path, tc.opts)
				require.NoError(t, err)
				if r := h.Recovery(); reflect.ValueOf(*tc.opts).IsZero() && !r.Relocated {
					require.True(t, r.FromSummary, "opened at its base, a clean pool is opened from its summary")
				}
			}
			want := bytes.Repeat([]byte{0xa5}, 30<<18)
			require.NoError(t, h.Update(func(tx *heap.Tx) error {
				r, err := heap.Root[bigRoot](tx)
				if err != nil {
					return err
				}
				if err := heap.Add(tx, r); err != nil {
					return err
				}
				r.Data, err = heap.MakeSlice[byte](tx, 30<<18, 30<<18)
				copy(r.Data, want)
				return err
			}), "7.5 MiB in a pool of %d slabs of which 1 is used", total)
			require.NoError(t, h.Close())
			checkPool(t, path)
			h, err = heap.Open(path, nil)
			require.NoError(t, err)
			require.NoError(t, h.View(func(tx *heap.Tx) error {
				r, err := heap.Root[bigRoot](tx)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(want, r.Data), "the array's content survives the reopen")
				return nil
			}))
			require.NoError(t, h.Close())
			checkPool(t, path)
		})
	}
}

// TestFreeRunJoinsSpaceAboveMark opens a pool whose high-water mark stayed
// above free slabs, as a pool written before the mark came down on frees
// may be: an extent that starts in those free slabs and goes on above the
// mark is allocated.
func TestFreeRunJoinsSpaceAboveMark(t *testing.T) {
	path := filepath.Join(fastTempDir(t), "mark.pool")
	h, err := heap.Open(path, &heap.Options{Size: 10 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		_, err := heap.Root[bigRoot](tx)
		return err
	}))
	require.NoError(t, h.Close())
	img := readFile(t, path)
	hdr, st := poolMeta(t, img)
	st.SlabHigh = 100
	st.Encode(img[layout.StateOff:])
	require.NoError(t, os.WriteFile(path, img, 0o600))
	checkPool(t, path)

	h, err = heap.Open(path, nil)
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		r, err := heap.Root[bigRoot](tx)
		if err != nil {
			return err
		}
		if err := heap.Add(tx, r); err != nil {
			return err
		}
		r.Data, err = heap.MakeSlice[byte](tx, 30<<18, 30<<18)
		return err
	}), "7.5 MiB in a pool of %d slabs, 99 free below the mark", hdr.Slabs)
	require.NoError(t, h.Close())
	checkPool(t, path)
	_, st = poolMeta(t, readFile(t, path))
	assert.Greater(t, st.SlabHigh, uint32(100), "the extent raised the mark")
}

// bigTags gives the head node tags in an array of several slabs (an
// extent), freeing its old ones.
func bigTags(tx *heap.Tx) error { return setTags(tx, 40000) }

// smallTags gives the head node tags in a small array, freeing its old
// ones.
func smallTags(tx *heap.Tx) error { return setTags(tx, 4) }

func setTags(tx *heap.Tx, c int) error {
	root, err := heap.Root[Root](tx)
	if err != nil {
		return err
	}
	n := root.Head
	tags, err := heap.MakeSlice[uint32](tx, 2, c)
	if err != nil {
		return err
	}
	// The capacity shows in the content, so that snapshots tell the
	// arrays apart.
	tags[0], tags[1] = n.Tags[0], uint32(c)
	if err := heap.FreeSlice(tx, n.Tags); err != nil {
		return err
	}
	return heap.Set(tx, &n.Tags, tags)
}

// threeBig makes three nodes, the head's tags in an extent at the top of
// the used slabs.
func threeBig(tx *heap.Tx) error {
	if err := addNodes(tx, 0, 3); err != nil {
		return err
	}
	return bigTags(tx)
}

// threeBigBelow is threeBig with a slab in use above the extent, so that
// freeing the extent leaves a free run below the high-water mark.
func threeBigBelow(tx *heap.Tx) error {
	if err := threeBig(tx); err != nil {
		return err
	}
	_, err := heap.New[bigRoot](tx)
	return err
}

// TestAllocFreeInOneTx allocates a node with its name and tags and frees
// them in the same transaction: the commit does not check where the freed
// node points, since it is gone at commit, and nothing is left allocated.
func TestAllocFreeInOneTx(t *testing.T) {
	h, _ := openTemp(t, nil)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return addNodes(tx, 0, 2) }))
	before := h.Stats()
	require.NoError(t, h.Update(func(tx *heap.Tx) error {
		return errors.Join(addNodes(tx, 10, 1), removeHead(tx))
	}))
	after := h.Stats()
	before.Tx, after.Tx = heap.TxStats{}, heap.TxStats{}
	assert.Equal(t, before, after)
}
