package heap_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

// The tests in this file cover the protocol the heap runs on a device that
// buffers stores (device.Buffered): no fence between logging a range and
// changing it, one fence per small commit, and the commit's ranges written
// back after its record, made durable by the next commit's fence, with
// recovery copying the record back until then.

// bufferedImage is a crash image with the states it may recover to.
type bufferedImage struct {
	img    []byte
	states []int
	what   string
}

// TestCrashBuffered runs a sequence of transactions, a rolled back one
// among them, then Close, on the emulated device in buffered mode, and
// takes crash images at every flush and fence: the durable state, the
// durable state with every line flushed since the last fence, and with
// each one alone. An image taken while transaction k runs must recover to
// the state after k-1 or after k; one taken after k returned (while the
// next one runs, or during Close) must hold k.
//
// A sealed pool buffers stores the same way (its plaintext is private
// memory, and only a flush seals a line into the file): its variant crashes
// the sealed file, whole records at a time, as sectors are written.
func TestCrashBuffered(t *testing.T) {
	t.Run("buffered", func(t *testing.T) { crashBuffered(t, nil) })
	t.Run("sealed", func(t *testing.T) { crashBuffered(t, newKey(t)) })
}

func crashBuffered(t *testing.T, key []byte) {
	dir := fastTempDir(t)
	path := filepath.Join(dir, "p.pool")
	h, err := heap.Open(path, &heap.Options{Size: crashPoolSize, Key: key})
	require.NoError(t, err)
	require.NoError(t, h.Close())

	var (
		images  []bufferedImage
		seen    = map[string]bool{}
		allowed []int
		what    string
	)
	emu := &device.Emulator{Buffered: key == nil}
	add := func(img []byte, variant string) {
		key := fmt.Sprintf("%x %v", xxhash.Sum64(img), allowed)
		if !seen[key] {
			seen[key] = true
			images = append(images, bufferedImage{img: img, states: allowed, what: what + " " + variant})
		}
	}
	emu.Hook = func(ev device.Event) {
		if allowed == nil {
			return
		}
		d := emu.Device()
		add(d.CrashImage(nil), fmt.Sprintf("%s %d, durable", ev.Kind, ev.Seq))
		// Units that reach the media whole: lines, or a sealed pool's
		// records.
		var units [][]int
		if key == nil {
			for _, l := range d.DirtyLines() {
				units = append(units, []int{l})
			}
		} else {
			units = recordLines(d.DirtyLines())
		}
		if len(units) == 0 {
			return
		}
		add(d.CrashImage(slices.Concat(units...)), fmt.Sprintf("%s %d, all %d flushed units", ev.Kind, ev.Seq, len(units)))
		// A sealed image costs a decryption of the whole pool to reopen:
		// fewer variants of those.
		most := 12
		if key != nil {
			most = 3
		}
		for i, u := range units {
			if i == most {
				break
			}
			add(d.CrashImage(u), fmt.Sprintf("%s %d, unit %d alone", ev.Kind, ev.Seq, u[0]))
			rest := slices.Concat(slices.Concat(units[:i]...), slices.Concat(units[i+1:]...))
			add(d.CrashImage(rest), fmt.Sprintf("%s %d, all but unit %d", ev.Kind, ev.Seq, u[0]))
		}
	}
	h, err = heap.Open(path, &heap.Options{Device: emu, Key: key})
	require.NoError(t, err)
	require.True(t, device.BuffersStores(h.Device()))

	abort := func(tx *heap.Tx) error {
		return errors.Join(renameAll(tx), addNodes(tx, 20, 2), removeHead(tx), errAbort)
	}
	ops := []struct {
		name  string
		op    func(tx *heap.Tx) error
		fails bool
	}{
		{"alloc-first", func(tx *heap.Tx) error { return addNodes(tx, 0, 3) }, false},
		{"commit", renameAll, false},
		{"abort", abort, true},
		{"alloc", func(tx *heap.Tx) error { return addNodes(tx, 10, 2) }, false},
		{"free", removeHead, false},
		{"abort-again", abort, true},
		{"commit-batched", renameAllBatched, false},
		{"free-again", removeHead, false},
	}
	states := []string{snapshot(t, h)}
	for _, o := range ops {
		last := len(states) - 1
		// A rolled back transaction may leave only the state before it.
		allowed, what = []int{last, last + 1}, o.name
		if o.fails {
			allowed = []int{last}
		}
		err := h.Update(o.op)
		if o.fails {
			require.ErrorIs(t, err, errAbort)
			allowed = nil
			require.Equal(t, states[last], snapshot(t, h), "%s: a rolled back transaction leaves the state before", o.name)
			continue
		}
		require.NoError(t, err, o.name)
		allowed = nil
		states = append(states, snapshot(t, h))
	}
	last := len(states) - 1
	allowed, what = []int{last}, "close"
	require.NoError(t, h.Close())
	allowed = nil

	require.NotEmpty(t, images)
	for i, im := range images {
		if testing.Verbose() {
			t.Logf("image %d: %s", i, im.what)
		}
		got := reopenKeyed(t, dir, im.img, key)
		ok := false
		for _, s := range im.states {
			ok = ok || (s < len(states) && got == states[s])
		}
		if !ok {
			t.Fatalf("image %d of %d (%s): state is none of %v:\n--- got\n%s--- allowed first\n%s", i, len(images), im.what, im.states, got, states[im.states[0]])
		}
	}
	t.Logf("%d distinct crash images over %d transactions and Close", len(images), len(ops))
}

// TestBufferedOneFencePerCommit: a one-field Update on a device that
// buffers stores is durable with one fence, where persistent memory's
// protocol needs two, and it is still durable: a crash right after Update
// returned recovers it.
func TestBufferedOneFencePerCommit(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			path := filepath.Join(fastTempDir(t), "p.pool")
			emu := &device.Emulator{Buffered: buffered}
			h, err := heap.Open(path, &heap.Options{Size: crashPoolSize, Device: emu})
			require.NoError(t, err)
			type counter struct{ N int }
			set := func(n int) error {
				return h.Update(func(tx *heap.Tx) error {
					c, err := heap.Root[counter](tx)
					if err != nil {
						return err
					}
					return heap.Set(tx, &c.N, n)
				})
			}
			require.NoError(t, set(1))
			before := h.Stats().Tx.Fences
			require.NoError(t, set(2))
			fences := h.Stats().Tx.Fences - before
			if buffered {
				assert.EqualValues(t, 1, fences)
			} else {
				assert.EqualValues(t, 2, fences)
			}
			img := emu.Device().CrashImage(nil)
			require.NoError(t, h.Close())

			dir := filepath.Dir(path)
			p := filepath.Join(dir, "image.pool")
			require.NoError(t, os.WriteFile(p, img, 0o600))
			info, err := recovery.Inspect(p)
			require.NoError(t, err)
			// The last commit's record is live, and so is the one
			// before (the previous generation), which on the buffered
			// device holds what the last fence was the first to make
			// durable.
			assert.True(t, info.Log.Commit && info.Log.Holds, "the last commit's record is live in the crash image")
			assert.True(t, info.Log.Prev, "the record before it is live too")
			h, err = heap.Open(p, nil)
			require.NoError(t, err)
			defer h.Close()
			require.NoError(t, h.View(func(tx *heap.Tx) error {
				c, err := heap.Root[counter](tx)
				if err != nil {
					return err
				}
				assert.Equal(t, 2, c.N, "the commit that returned must survive a crash right after it")
				return nil
			}))
		})
	}
}

// reopenKeyed is reopenImage for a pool that may be sealed: a sealed image
// is opened with key, and the checker runs on plain ones.
func reopenKeyed(t *testing.T, dir string, img, key []byte) string {
	t.Helper()
	if key == nil {
		return reopenImage(t, dir, img)
	}
	p := filepath.Join(dir, "image.pool")
	require.NoError(t, os.WriteFile(p, img, 0o600))
	h, err := heap.Open(p, &heap.Options{Key: key, ForceRelocate: true})
	require.NoError(t, err, "reopening a crash image")
	defer h.Close()
	return snapshot(t, h)
}
