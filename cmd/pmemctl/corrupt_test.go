package main

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/filetest"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// damageBitmap marks the golden pool's freed node allocated in its slab's
// bitmap and reseals the slab header, so that only the used count
// disagrees with the bitmap.
func damageBitmap(t *testing.T, g *goldenPool) {
	t.Helper()
	b, err := os.ReadFile(g.path)
	require.NoError(t, err)
	info, err := recovery.Inspect(g.path)
	require.NoError(t, err)
	h := &info.Header
	i, ok := h.SlabIndex(g.freed)
	require.True(t, ok)
	off := h.SlabOffset(i)
	sh, err := layout.DecodeSlabHeader(b[off:], h.SlabOff+h.Slabs*h.SlabSize-off, h.SlabSize)
	require.NoError(t, err)
	slot := (g.freed - off - uint64(sh.DataOff)) / uint64(sh.SlotSize)
	layout.Bitmap(b[off:], sh.Slots)[slot/8] |= 1 << (slot % 8)
	layout.SealSlab(b[off:], sh.Slots)
	require.NoError(t, os.WriteFile(g.path, b, 0o644))
}

// damageLiveLog replaces the golden pool by the image a crash leaves in
// the middle of a transaction that changes the root and links a new node:
// its undo log holds the transaction, which a recovery rolls back.
func damageLiveLog(t *testing.T, g *goldenPool) {
	t.Helper()
	images := crashImages(t, g.path, func(tx *heap.Tx) error {
		root, err := heap.Root[goldenRoot](tx)
		if err != nil {
			return err
		}
		n, err := heap.New[goldenNode](tx)
		if err != nil {
			return err
		}
		n.Next = root.Head
		if err := heap.Set(tx, &root.Head, n); err != nil {
			return err
		}
		return heap.Set(tx, &root.Count, root.Count+1)
	})
	for _, img := range images {
		require.NoError(t, os.WriteFile(g.path, img, 0o644))
		info, err := recovery.Inspect(g.path)
		require.NoError(t, err)
		if info.Log.Entries > 0 && !(info.Log.Commit && info.Log.Holds) {
			return
		}
	}
	t.Fatal("no crash image has a live undo log")
}

func TestCorruptPools(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, g *goldenPool)
		// kind is the one problem check reports, in a line containing want.
		kind, want string
		// infoCode is the exit code of info (-1: either), readCode that of
		// types, stats and dump, which recover the pool in memory.
		infoCode, readCode int
	}{
		{
			name:   "header checksum",
			damage: func(t *testing.T, g *goldenPool) { filetest.FlipByte(t, g.path, 100) },
			kind:   "header", want: "header slot A at offset 0: checksum",
			infoCode: exitProblems, readCode: exitIO,
		},
		{
			name:   "slab bitmap",
			damage: damageBitmap,
			kind:   "bitmap", want: "the bitmap marks 4 slots allocated, the header counts 3",
			infoCode: exitProblems, readCode: exitIO,
		},
		{
			name: "dangling pointer",
			damage: func(t *testing.T, g *goldenPool) {
				putWord(t, g.path, g.kids1, g.base(t)+g.freed)
			},
			kind: "pointer-free", want: "field Kids[1] at offset",
			infoCode: exitOK, readCode: exitOK,
		},
		{
			name:   "live undo log",
			damage: damageLiveLog,
			kind:   "undo-log", want: "holds an interrupted transaction: Open rolls back",
			infoCode: -1, readCode: exitOK,
		},
		{
			name: "slab summary",
			damage: func(t *testing.T, g *goldenPool) {
				info, err := recovery.Inspect(g.path)
				require.NoError(t, err)
				require.True(t, info.Summary.Present)
				filetest.FlipByte(t, g.path, int64(info.Header.SumOff)+layout.SummaryHeaderSize+8)
			},
			kind: "summary", want: "slab summary at offset 77824: entries checksum",
			// Read commands validate every slab header and never use
			// the summary.
			infoCode: exitProblems, readCode: exitOK,
		},
		{
			name: "truncated file",
			damage: func(t *testing.T, g *goldenPool) {
				require.NoError(t, os.Truncate(g.path, 2<<20-16<<10))
			},
			kind: "size", want: "the last 16384 bytes are missing",
			infoCode: exitProblems, readCode: exitIO,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGoldenPool(t, t.TempDir(), "bad.pool", false)
			tc.damage(t, g)
			before, err := os.ReadFile(g.path)
			require.NoError(t, err)

			out, stderr, code := pmemctl(t, "check", g.path)
			assert.Equal(t, exitProblems, code)
			assert.Contains(t, out, tc.want)
			assert.Contains(t, out, g.path+": 1 problem")
			assert.Contains(t, stderr, "1 problem found")

			out, _, code = pmemctl(t, "check", "--json", "--leaks", g.path)
			assert.Equal(t, exitProblems, code)
			var r checkResult
			require.NoError(t, json.Unmarshal([]byte(out), &r), out)
			require.Len(t, r.Problems, 1)
			assert.Equal(t, tc.kind, r.Problems[0].Kind)
			assert.Equal(t, tc.kind == "undo-log", r.Problems[0].NeedsRecovery)
			require.NotNil(t, r.Leaks)
			if tc.kind == "undo-log" {
				assert.Empty(t, r.Leaks.Skipped, "the walk runs on a pool that only needs recovery")
				assert.Zero(t, r.Leaks.Unreachable, "the rolled-back allocation is not a leak")
			} else {
				assert.NotEmpty(t, r.Leaks.Skipped, "the walk must not run on a damaged pool")
			}

			out, _, code = pmemctl(t, "info", "--json", g.path)
			if tc.infoCode >= 0 {
				assert.Equal(t, tc.infoCode, code)
			}
			assert.True(t, json.Valid([]byte(out)), out)
			if tc.kind == "undo-log" {
				assert.Contains(t, out, "live undo log")
			}

			for _, cmd := range []string{"types", "stats", "dump"} {
				out, stderr, code := pmemctl(t, cmd, g.path)
				assert.Equal(t, tc.readCode, code, "%s: %s", cmd, stderr)
				if code == exitOK {
					assert.NotEmpty(t, out)
				}
			}
			after, err := os.ReadFile(g.path)
			require.NoError(t, err)
			assert.Equal(t, before, after, "a read command changed the pool")
		})
	}
}

// TestCorruptErrors checks that commands on a damaged pool say what is
// wrong when they cannot go on.
func TestCorruptErrors(t *testing.T) {
	g := newGoldenPool(t, t.TempDir(), "cut.pool", false)
	require.NoError(t, os.Truncate(g.path, 2<<20-16<<10))
	for _, cmd := range []string{"types", "stats", "dump"} {
		_, stderr, code := pmemctl(t, cmd, g.path)
		assert.Equal(t, exitIO, code)
		assert.Contains(t, stderr, "truncated", cmd)
	}
	out, _, code := pmemctl(t, "info", g.path)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, "file size      FAILED  the file is 2080768 bytes, the header records 2097152")
}

// TestNoHeaderSlot damages both header slots: info says what it can,
// and the commands that need a header refuse the pool.
func TestNoHeaderSlot(t *testing.T) {
	g := newGoldenPool(t, t.TempDir(), "headless.pool", false)
	filetest.FlipByte(t, g.path, 100)
	filetest.FlipByte(t, g.path, 4096+100)
	out, _, code := pmemctl(t, "info", g.path)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, "unreadable: neither header slot holds")
	assert.Contains(t, out, "header slot B  FAILED")
	out, _, code = pmemctl(t, "check", g.path)
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, out, "2 problems")
	for _, args := range [][]string{{"stats", g.path}, {"recover", g.path, "-o", g.path + ".new"}} {
		_, stderr, code := pmemctl(t, args...)
		assert.Equal(t, exitIO, code)
		assert.Contains(t, stderr, "checksum")
	}
}

func TestNotAPool(t *testing.T) {
	dir := t.TempDir()
	random := dir + "/random.bin"
	require.NoError(t, os.WriteFile(random, make([]byte, 1<<20), 0o644))
	for _, args := range [][]string{
		{"info", random}, {"types", random}, {"stats", random}, {"dump", random},
		{"check", "--leaks", random}, {"recover", random, "--output", dir + "/r.pool"},
		{"gc", random, "--output", dir + "/g.pool"}, {"info", dir + "/missing.pool"},
	} {
		out, stderr, code := pmemctl(t, args...)
		assert.Equal(t, exitIO, code, "%v", args)
		assert.Empty(t, out, "%v", args)
		assert.NotEmpty(t, stderr, "%v", args)
	}
	_, err := os.Stat(dir + "/r.pool")
	assert.ErrorIs(t, err, os.ErrNotExist, "recover leaves no output behind")
	_, err = os.Stat(dir + "/g.pool")
	assert.ErrorIs(t, err, os.ErrNotExist, "gc leaves no output behind")
}
