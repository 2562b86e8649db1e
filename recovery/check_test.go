package recovery_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

type checkNode struct {
	Key  uint64
	Name string
	Next *checkNode
	Tags []uint32
	Any  unsafe.Pointer
}

type checkOther struct{ A, B uint64 }

type checkRoot struct {
	Head  *checkNode
	Other *checkOther
	Kids  []*checkNode
}

var (
	checkOffName = uint64(unsafe.Offsetof(checkNode{}.Name))
	checkOffNext = uint64(unsafe.Offsetof(checkNode{}.Next))
	checkOffTags = uint64(unsafe.Offsetof(checkNode{}.Tags))
)

// checkPool is a closed pool and the file offsets of what it holds.
type checkPool struct {
	path string
	hdr  layout.Header
	// nodes are the offsets of a list of nodes, each with a name, tags
	// and a pointer to other, and linked by Next.
	nodes []uint64
	other uint64
	// freed is the offset of a node freed by a later transaction.
	freed uint64
	// kids is the offset of an array of two pointers to the first nodes.
	kids uint64
}

func (p *checkPool) addr(off uint64) uint64 { return p.hdr.Base + off }

// slabOf returns the file offset of the slab holding file offset off.
func (p *checkPool) slabOf(off uint64) uint64 {
	i, ok := p.hdr.SlabIndex(off)
	if !ok {
		panic(fmt.Sprintf("offset %d is not in a slab", off))
	}
	return p.hdr.SlabOffset(i)
}

func newCheckPool(t testing.TB) *checkPool { return newCheckPoolSize(t, 4<<20) }

func newCheckPoolSize(t testing.TB, size int64) *checkPool {
	t.Helper()
	p := &checkPool{path: filepath.Join(t.TempDir(), "p.pool")}
	h, err := heap.Open(p.path, &heap.Options{Size: size})
	require.NoError(t, err)
	offset := func(ptr unsafe.Pointer) uint64 { return uint64(uintptr(ptr) - h.Base()) }
	var victim *checkNode
	err = h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[checkRoot](tx)
		if err != nil {
			return err
		}
		if root.Other, err = heap.New[checkOther](tx); err != nil {
			return err
		}
		p.other = offset(unsafe.Pointer(root.Other))
		link := &root.Head
		for i := range 8 {
			n, err := heap.New[checkNode](tx)
			if err != nil {
				return err
			}
			n.Key = uint64(i)
			if n.Name, err = heap.NewString(tx, fmt.Sprintf("node %d", i)); err != nil {
				return err
			}
			if n.Tags, err = heap.MakeSlice[uint32](tx, 3, 3); err != nil {
				return err
			}
			n.Any = unsafe.Pointer(root.Other)
			*link, link = n, &n.Next
			p.nodes = append(p.nodes, offset(unsafe.Pointer(n)))
		}
		if root.Kids, err = heap.MakeSlice[*checkNode](tx, 2, 2); err != nil {
			return err
		}
		root.Kids[0], root.Kids[1] = root.Head, root.Head.Next
		p.kids = offset(unsafe.Pointer(&root.Kids[0]))
		victim, err = heap.New[checkNode](tx)
		p.freed = offset(unsafe.Pointer(victim))
		return err
	})
	require.NoError(t, err)
	require.NoError(t, h.Update(func(tx *heap.Tx) error { return heap.Free(tx, victim) }))
	require.NoError(t, h.Close())
	f, err := os.Open(p.path)
	require.NoError(t, err)
	defer f.Close()
	p.hdr, err = recovery.ReadHeader(f)
	require.NoError(t, err)
	return p
}

// checkEdit changes the pool file's bytes with fn.
func checkEdit(t testing.TB, path string, fn func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, fn(b), 0o644))
}

func checkPutWord(b []byte, off, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }

// runCheck runs the checker on path, collecting every problem, and asserts
// that the file is left as it was and that every problem wraps a sentinel.
func runCheck(t *testing.T, path string) ([]recovery.Problem, recovery.CheckStats, error) {
	t.Helper()
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	var probs []recovery.Problem
	st, err := recovery.CheckFileStats(path, func(p recovery.Problem) bool {
		probs = append(probs, p)
		return true
	})
	after, rerr := os.ReadFile(path)
	require.NoError(t, rerr)
	require.True(t, bytes.Equal(before, after), "the check changed the file")
	for _, p := range probs {
		t.Log(p)
		assert.True(t, errors.Is(p.Err, pmemgo.ErrCorrupt) || errors.Is(p.Err, pmemgo.ErrTruncated) ||
			errors.Is(p.Err, recovery.ErrNeedsRecovery), "problem %v wraps no sentinel", p)
		assertWhereOnce(t, p)
	}
	return probs, st, err
}

// assertWhereOnce asserts that a problem names its place once, in Where
// and Offset: its message must not start by naming it again, as "heap
// state at offset 8192: heap state at offset 8192: checksum ..." and
// "header slot A at offset 0: header: checksum ..." did.
func assertWhereOnce(t *testing.T, p recovery.Problem) {
	t.Helper()
	first := func(s string) string {
		w, _, _ := strings.Cut(s, " ")
		return strings.TrimSuffix(w, ":")
	}
	msg := p.Err.Error()
	assert.NotEqual(t, first(p.Where), first(msg), "problem %q names its place again", p)
	assert.NotContains(t, msg, p.Where+" at offset", "problem %q names its place again", p)
}

func checkKinds(probs []recovery.Problem) []string {
	var ks []string
	for _, p := range probs {
		ks = append(ks, p.Kind)
	}
	return ks
}

func TestCheckCleanPool(t *testing.T) {
	p := newCheckPool(t)
	probs, st, err := runCheck(t, p.path)
	require.NoError(t, err)
	assert.Empty(t, probs)
	// root, other, kids, 8 nodes with a name and tags each.
	assert.EqualValues(t, 27, st.Objects)
	// root: 3; kids: 2; each node: Name, Next (but the last), Tags, Any.
	assert.EqualValues(t, 3+2+8*4-1, st.Pointers)
	// root, other, kids, nodes, strings and tags each have a slab.
	assert.Equal(t, 6, st.Slabs)
	assert.Zero(t, st.RolledBack)
}

func TestCheckFindsDamage(t *testing.T) {
	type want struct {
		kind  string
		off   func(p *checkPool) int64
		where string
	}
	at := func(off int64) func(*checkPool) int64 { return func(*checkPool) int64 { return off } }
	nextOf := func(i int) func(*checkPool) int64 {
		return func(p *checkPool) int64 { return int64(p.nodes[i] + checkOffNext) }
	}
	otherSlab := func(p *checkPool) int64 { return int64(p.slabOf(p.other)) }
	tests := []struct {
		name   string
		damage func(t *testing.T, p *checkPool, b []byte) []byte
		want   []want
	}{
		{
			name: "header slot A bit flip",
			damage: func(_ *testing.T, _ *checkPool, b []byte) []byte {
				b[100] ^= 0x10
				return b
			},
			want: []want{{kind: "header", off: at(0), where: "header slot A"}},
		},
		{
			name: "slab header checksum",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				b[p.slabOf(p.other)+60] ^= 1
				return b
			},
			want: []want{{kind: "slab", off: otherSlab, where: "slab"}},
		},
		{
			name: "bitmap resealed with a bad count",
			damage: func(t *testing.T, p *checkPool, b []byte) []byte {
				so := p.slabOf(p.other)
				sh, err := layout.DecodeSlabHeader(b[so:], p.hdr.Size-so, p.hdr.SlabSize)
				require.NoError(t, err)
				b[so+layout.SlabHeaderSize] |= 1 << 1 // slot 1 is free
				layout.SealSlab(b[so:], sh.Slots)
				return b
			},
			want: []want{{kind: "bitmap", off: otherSlab, where: "slab"}},
		},
		{
			name: "pointer outside the pool",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[2]+checkOffNext, 0x10)
				return b
			},
			want: []want{{kind: "pointer-range", off: nextOf(2), where: "field Next"}},
		},
		{
			name: "pointer into the metadata",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[2]+checkOffNext, p.addr(layout.StateOff))
				return b
			},
			want: []want{{kind: "pointer-range", off: nextOf(2), where: "field Next"}},
		},
		{
			name: "array element outside the pool",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.kids+8, 0x10)
				return b
			},
			want: []want{{kind: "pointer-range", off: func(p *checkPool) int64 { return int64(p.kids + 8) }, where: "array 0 element 1 (*"}},
		},
		{
			name: "pointer to a freed object",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[7]+checkOffNext, p.addr(p.freed))
				return b
			},
			want: []want{{kind: "pointer-free", off: nextOf(7), where: "field Next"}},
		},
		{
			name: "pointer to a free slab",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[7]+checkOffNext, p.addr(p.hdr.SlabOffset(uint32(p.hdr.Slabs-1))+4096))
				return b
			},
			want: []want{{kind: "pointer-free", off: nextOf(7), where: "field Next"}},
		},
		{
			name: "pointer to another type",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[3]+checkOffNext, p.addr(p.other))
				return b
			},
			want: []want{{kind: "pointer-type", off: nextOf(3), where: "field Next"}},
		},
		{
			name: "pointer inside an object",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[3]+checkOffNext, p.addr(p.nodes[5]+8))
				return b
			},
			want: []want{{kind: "pointer-type", off: nextOf(3), where: "field Next"}},
		},
		{
			name: "slice capacity past its slot",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[4]+checkOffTags+16, 100)
				return b
			},
			want: []want{{kind: "pointer-bounds", off: func(p *checkPool) int64 { return int64(p.nodes[4] + checkOffTags) }, where: "field Tags"}},
		},
		{
			name: "string length past its slot",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[4]+checkOffName+8, 1000)
				return b
			},
			want: []want{{kind: "pointer-bounds", off: func(p *checkPool) int64 { return int64(p.nodes[4] + checkOffName) }, where: "field Name"}},
		},
		{
			name: "string data in an object",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				checkPutWord(b, p.nodes[4]+checkOffName, p.addr(p.other))
				return b
			},
			want: []want{{kind: "pointer-type", off: func(p *checkPool) int64 { return int64(p.nodes[4] + checkOffName) }, where: "field Name"}},
		},
		{
			name: "root of another type",
			damage: func(t *testing.T, p *checkPool, b []byte) []byte {
				s, err := layout.DecodeState(b[layout.StateOff:], &p.hdr)
				require.NoError(t, err)
				s.RootOff = p.other
				s.Encode(b[layout.StateOff:])
				return b
			},
			want: []want{{kind: "root", off: at(layout.StateOff), where: "root"}},
		},
		{
			name: "heap state checksum",
			damage: func(_ *testing.T, _ *checkPool, b []byte) []byte {
				b[layout.StateOff+20] ^= 4
				return b
			},
			want: []want{{kind: "state", off: at(layout.StateOff), where: "heap state"}},
		},
		{
			name: "heap state field resealed",
			damage: func(t *testing.T, p *checkPool, b []byte) []byte {
				s, err := layout.DecodeState(b[layout.StateOff:], &p.hdr)
				require.NoError(t, err)
				s.RootType = s.Types + 1
				s.Encode(b[layout.StateOff:])
				return b
			},
			want: []want{{kind: "state", off: at(layout.StateOff), where: "heap state"}},
		},
		{
			name: "type table checksum",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				b[p.hdr.TypeOff+20] ^= 4
				return b
			},
			want: []want{{kind: "type-table", off: func(p *checkPool) int64 { return int64(p.hdr.TypeOff) }, where: "type table"}},
		},
		{
			name: "undo log entry outside the pool",
			damage: func(t *testing.T, p *checkPool, b []byte) []byte {
				writeCheckLiveLog(t, p, b, p.hdr.Size+64, 0)
				return b
			},
			want: []want{{kind: "undo-log", off: func(p *checkPool) int64 { return int64(p.hdr.LogOff) }, where: "undo log"}},
		},
		{
			name: "file one slab short",
			damage: func(_ *testing.T, _ *checkPool, b []byte) []byte {
				return b[:len(b)-64<<10]
			},
			want: []want{{kind: "size", off: at(4<<20 - 64<<10), where: "file"}},
		},
		{
			name: "file ends in the metadata",
			damage: func(_ *testing.T, _ *checkPool, b []byte) []byte {
				return b[:20000]
			},
			want: []want{{kind: "size", off: at(20000), where: "file"}},
		},
		{
			name: "file ends in header slot A",
			damage: func(_ *testing.T, _ *checkPool, b []byte) []byte {
				return b[:100]
			},
			want: []want{{kind: "size", off: at(100), where: "file"}},
		},
		{
			// What a growth interrupted between extending the file and
			// writing the header leaves: no problem, the next growth
			// reuses the bytes.
			name: "file longer than the pool",
			damage: func(_ *testing.T, _ *checkPool, b []byte) []byte {
				return append(b, make([]byte, 4096)...)
			},
		},
		{
			name: "interrupted swizzle",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				h := p.hdr
				h.Flags |= layout.FlagSwizzling
				h.Old, h.Target = []uint64{h.Base}, h.Base+1<<40
				h.SwizzleGen++
				for i := range 2 {
					h.Encode(b[layout.SlotOff(i):])
				}
				return b
			},
			want: []want{{kind: "swizzle", where: "header slot"}},
		},
		{
			name: "interrupted swizzle with a slab rewritten",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				h := p.hdr
				h.Flags |= layout.FlagSwizzling
				h.Old, h.Target = []uint64{h.Base}, h.Base+1<<40
				h.SwizzleGen++
				for i := range 2 {
					h.Encode(b[layout.SlotOff(i):])
				}
				for k := range uint64(2) {
					at := p.kids + 8*k
					checkPutWord(b, at, binary.LittleEndian.Uint64(b[at:])-h.Base+h.Target)
				}
				layout.SetSlabGen(b[p.slabOf(p.kids):], h.SwizzleGen)
				return b
			},
			want: []want{{kind: "swizzle", where: "header slot"}},
		},
		{
			name: "swizzled slab holding old pointers",
			damage: func(_ *testing.T, p *checkPool, b []byte) []byte {
				h := p.hdr
				h.Flags |= layout.FlagSwizzling
				h.Old, h.Target = []uint64{h.Base}, h.Base+1<<40
				h.SwizzleGen++
				for i := range 2 {
					h.Encode(b[layout.SlotOff(i):])
				}
				layout.SetSlabGen(b[p.slabOf(p.kids):], h.SwizzleGen)
				return b
			},
			want: []want{
				{kind: "swizzle", where: "header slot"},
				{kind: "swizzle", off: func(p *checkPool) int64 { return int64(p.kids) }, where: "array 0 element 0"},
				{kind: "swizzle", off: func(p *checkPool) int64 { return int64(p.kids + 8) }, where: "array 0 element 1"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newCheckPool(t)
			checkEdit(t, p.path, func(b []byte) []byte { return tc.damage(t, p, b) })
			probs, _, err := runCheck(t, p.path)
			require.NoError(t, err)
			require.Len(t, probs, len(tc.want), "problems: %v", probs)
			for i, w := range tc.want {
				assert.Equal(t, w.kind, probs[i].Kind)
				assert.Contains(t, probs[i].Where, w.where)
				if w.off != nil {
					assert.Equal(t, w.off(p), probs[i].Offset)
				}
				assert.NotEmpty(t, probs[i].String())
			}
		})
	}
}

// writeCheckLiveLog makes the undo log hold a transaction a crash interrupted:
// one entry, of the current generation, for the 8 bytes at off.
func writeCheckLiveLog(t *testing.T, p *checkPool, b []byte, off uint64, old uint64) {
	log := b[p.hdr.LogOff : p.hdr.LogOff+p.hdr.LogSize]
	gen, err := layout.LogGen(log)
	require.NoError(t, err)
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], old)
	start, _ := layout.LogHalf(uint64(len(log)), gen)
	layout.PutLogEntry(log[start:], gen, off, w[:])
}

func TestCheckLiveUndoLog(t *testing.T) {
	t.Run("rollback repairs", func(t *testing.T) {
		p := newCheckPool(t)
		checkEdit(t, p.path, func(b []byte) []byte {
			at := p.nodes[1] + checkOffNext
			writeCheckLiveLog(t, p, b, at, binary.LittleEndian.Uint64(b[at:]))
			checkPutWord(b, at, 0x10) // the interrupted transaction's change
			return b
		})
		probs, st, err := runCheck(t, p.path)
		require.NoError(t, err)
		require.Equal(t, []string{"undo-log"}, checkKinds(probs))
		assert.Equal(t, int64(p.hdr.LogOff), probs[0].Offset)
		assert.ErrorIs(t, probs[0].Err, recovery.ErrNeedsRecovery)
		assert.Contains(t, probs[0].Err.Error(), "1 entries")
		assert.Equal(t, 1, st.RolledBack)
	})
	t.Run("rollback restores damage", func(t *testing.T) {
		p := newCheckPool(t)
		checkEdit(t, p.path, func(b []byte) []byte {
			writeCheckLiveLog(t, p, b, p.nodes[1]+checkOffNext, 0x10)
			return b
		})
		probs, _, err := runCheck(t, p.path)
		require.NoError(t, err)
		require.Equal(t, []string{"undo-log", "pointer-range"}, checkKinds(probs))
		assert.Equal(t, int64(p.nodes[1]+checkOffNext), probs[1].Offset)
	})
}

func TestCheckRefusesNonPools(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"text", []byte("hello, world\n")},
		{"zeros", make([]byte, 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			require.NoError(t, os.WriteFile(path, tc.data, 0o644))
			probs, _, err := runCheck(t, path)
			assert.ErrorIs(t, err, pmemgo.ErrNotPool)
			assert.Empty(t, probs)
		})
	}
	t.Run("missing", func(t *testing.T) {
		err := recovery.CheckFile(filepath.Join(dir, "missing"), func(recovery.Problem) bool { return true })
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("version", func(t *testing.T) {
		p := newCheckPool(t)
		checkEdit(t, p.path, func(b []byte) []byte {
			h := p.hdr
			h.Version = layout.Version + 1
			h.Encode(b[layout.SlotOff(1):])
			return b
		})
		probs, _, err := runCheck(t, p.path)
		assert.ErrorIs(t, err, pmemgo.ErrVersion)
		assert.Empty(t, probs)
	})
}

// damageCheckSeveral makes four independent problems: a header slot, a bitmap,
// a pointer outside the pool and a dangling one.
func damageCheckSeveral(t *testing.T, p *checkPool) {
	checkEdit(t, p.path, func(b []byte) []byte {
		b[layout.SlotOff(1)+64] ^= 1
		so := p.slabOf(p.other)
		sh, err := layout.DecodeSlabHeader(b[so:], p.hdr.Size-so, p.hdr.SlabSize)
		require.NoError(t, err)
		b[so+layout.SlabHeaderSize] |= 1 << 2
		layout.SealSlab(b[so:], sh.Slots)
		checkPutWord(b, p.nodes[3]+checkOffNext, 0x10)
		checkPutWord(b, p.nodes[6]+checkOffNext, p.addr(p.freed))
		return b
	})
}

func TestCheckReportsEveryProblem(t *testing.T) {
	p := newCheckPool(t)
	damageCheckSeveral(t, p)
	probs, _, err := runCheck(t, p.path)
	require.NoError(t, err)
	assert.Equal(t, []string{"header", "bitmap", "pointer-range", "pointer-free"}, checkKinds(probs))
	for i := 1; i < len(probs); i++ {
		assert.Less(t, probs[i-1].Offset, probs[i].Offset, "problems out of file order")
	}
}

// TestCheckProgress checks the progress reports: from 0 to the number of
// slabs below the high-water mark, never backwards, about once every
// 16 MiB of slabs.
func TestCheckProgress(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fill, if not nil, is the transaction that fills a 32 MiB pool.
		fill func(tx *heap.Tx) error
		// calls is the fewest calls the check must make.
		calls int
	}{
		{name: "empty pool", calls: 1},
		{name: "one object", fill: func(tx *heap.Tx) error {
			_, err := heap.Root[checkRoot](tx)
			return err
		}, calls: 2},
		{name: "24 MiB of arrays", fill: func(tx *heap.Tx) error {
			for range 6 {
				if _, err := heap.MakeSlice[uint64](tx, 512<<10, 512<<10); err != nil {
					return err
				}
			}
			return nil
		}, calls: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.pool")
			h, err := heap.Open(path, &heap.Options{Size: 32 << 20})
			require.NoError(t, err)
			if tc.fill != nil {
				require.NoError(t, h.Update(tc.fill))
			}
			require.NoError(t, h.Close())
			info, err := recovery.Inspect(path)
			require.NoError(t, err)
			high := int64(info.State.SlabHigh)

			var calls [][2]int64
			opts := &recovery.CheckOptions{Progress: func(done, total int64) {
				calls = append(calls, [2]int64{done, total})
			}}
			_, err = recovery.CheckFileOptions(path, opts, func(p recovery.Problem) bool {
				t.Error(p)
				return true
			})
			require.NoError(t, err)
			t.Log(calls)
			require.GreaterOrEqual(t, len(calls), tc.calls)
			assert.LessOrEqual(t, len(calls), 2+int(high*int64(info.Header.SlabSize)/(16<<20)), "too many calls")
			assert.Equal(t, [2]int64{0, high}, calls[0])
			assert.Equal(t, [2]int64{high, high}, calls[len(calls)-1])
			for i := 1; i < len(calls); i++ {
				assert.LessOrEqual(t, calls[i-1][0], calls[i][0], "done went backwards")
				assert.Equal(t, high, calls[i][1], "total changed")
			}
		})
	}
}

func TestCheckStopsWhenYieldSaysSo(t *testing.T) {
	p := newCheckPool(t)
	damageCheckSeveral(t, p)
	var n int
	err := recovery.CheckFile(p.path, func(recovery.Problem) bool {
		n++
		return false
	})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// TestCheckFileShrinksWhileChecked truncates the pool under the checker's
// mapping: the pages that are gone must give an error, not a crash.
func TestCheckFileShrinksWhileChecked(t *testing.T) {
	p := newCheckPool(t)
	checkEdit(t, p.path, func(b []byte) []byte {
		checkPutWord(b, p.nodes[0]+checkOffNext, 0x10)
		return b
	})
	err := recovery.CheckFile(p.path, func(recovery.Problem) bool {
		require.NoError(t, os.Truncate(p.path, int64(p.hdr.SlabOff)))
		return true
	})
	assert.ErrorContains(t, err, "changed while being checked")
}

// TestCheckRandomDamage damages a pool at random, in raw bytes and in
// fields resealed with valid checksums: whatever the damage, the check must
// neither panic nor give up on the pool.
func TestCheckRandomDamage(t *testing.T) {
	p := newCheckPoolSize(t, layout.MinPoolSize)
	clean, err := os.ReadFile(p.path)
	require.NoError(t, err)
	rounds := 400
	if testing.Short() {
		rounds = 40
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range rounds {
		b := bytes.Clone(clean)
		for range 1 + rng.IntN(3) {
			b = randomDamage(rng, p, b)
		}
		if rng.IntN(8) == 0 {
			b = b[:rng.IntN(len(b))]
		}
		require.NoError(t, os.WriteFile(p.path, b, 0o644))
		err := recovery.CheckFile(p.path, func(p recovery.Problem) bool {
			assertWhereOnce(t, p)
			return true
		})
		if err != nil {
			assert.True(t, errors.Is(err, pmemgo.ErrNotPool) || errors.Is(err, pmemgo.ErrVersion), "round %d: %v", i, err)
		}
	}
}

// randomNumber returns a number likely to sit on an edge: small, near a
// power of two, or anything.
func randomNumber(rng *rand.Rand) uint64 {
	switch rng.IntN(4) {
	case 0:
		return rng.Uint64N(64)
	case 1:
		return 1<<rng.IntN(64) - rng.Uint64N(2)
	case 2:
		return rng.Uint64N(1 << 20)
	}
	return rng.Uint64()
}

func randomDamage(rng *rand.Rand, p *checkPool, b []byte) []byte {
	slab := p.hdr.SlabOff + rng.Uint64N(8)*p.hdr.SlabSize
	switch rng.IntN(8) {
	case 0: // a flipped bit anywhere in the metadata or the first slabs
		b[rng.IntN(int(p.hdr.SlabOff+8*p.hdr.SlabSize))] ^= 1 << rng.IntN(8)
	case 1: // a pointer word anywhere in the first slabs
		checkPutWord(b, (slab+rng.Uint64N(p.hdr.SlabSize-8))&^7, p.addr(randomNumber(rng)%(p.hdr.Size+4096)))
	case 2: // a slab header field, resealed
		sh, err := layout.DecodeSlabHeader(b[slab:], p.hdr.Size-slab, p.hdr.SlabSize)
		if err != nil || sh.Kind == layout.KindFree {
			return b
		}
		v := uint32(randomNumber(rng))
		fields := []*uint32{&sh.Type, &sh.SlotSize, &sh.Slots, &sh.Used, &sh.DataOff, &sh.Extent, &sh.Elems}
		*fields[rng.IntN(len(fields))] = v
		if rng.IntN(4) == 0 {
			sh.Kind = uint8(v)
		}
		if layout.SlabHeaderSize+uint64(layout.BitmapBytes(sh.Slots)) <= uint64(len(b))-slab {
			layout.EncodeSlabHeader(b[slab:], &sh)
		}
	case 3: // a bitmap bit, resealed
		sh, err := layout.DecodeSlabHeader(b[slab:], p.hdr.Size-slab, p.hdr.SlabSize)
		if err != nil || sh.Kind == layout.KindFree {
			return b
		}
		b[slab+layout.SlabHeaderSize+rng.Uint64N(uint64(layout.BitmapBytes(sh.Slots)))] ^= 1 << rng.IntN(8)
		layout.SealSlab(b[slab:], sh.Slots)
	case 4: // a heap state field, resealed
		s, err := layout.DecodeState(b[layout.StateOff:], &p.hdr)
		if err != nil {
			return b
		}
		switch v := randomNumber(rng); rng.IntN(4) {
		case 0:
			s.RootOff = v % (p.hdr.Size + 1)
		case 1:
			s.RootType = uint32(v)
		case 2:
			s.SlabHigh = uint32(v % (p.hdr.Slabs + 1))
		default:
			s.Types = uint32(v)
		}
		s.Encode(b[layout.StateOff:])
	case 5: // a live undo-log entry for a random range
		log := b[p.hdr.LogOff : p.hdr.LogOff+p.hdr.LogSize]
		if gen, err := layout.LogGen(log); err == nil {
			old := make([]byte, 1+rng.IntN(64))
			for k := range old {
				old[k] = byte(rng.Uint32())
			}
			start, _ := layout.LogHalf(uint64(len(log)), gen)
			layout.PutLogEntry(log[start:], gen, randomNumber(rng)%p.hdr.Size, old)
		}
	case 6: // a header field, resealed in both slots
		h := p.hdr
		fields := []*uint64{&h.Size, &h.Base, &h.TypeOff, &h.TypeSize, &h.LogOff, &h.LogSize, &h.SlabOff, &h.SlabSize, &h.Slabs}
		*fields[rng.IntN(len(fields))] = randomNumber(rng)
		for k := range 2 {
			h.Encode(b[layout.SlotOff(k):])
		}
	default: // a random word in the metadata
		checkPutWord(b, rng.Uint64N(p.hdr.SlabOff/8)*8, randomNumber(rng))
	}
	return b
}

type checkBenchNode struct {
	Key  uint64
	Next *checkBenchNode
}

func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{1 << 20} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "bench.pool")
			h, err := heap.Open(path, &heap.Options{Size: int64(n)*24 + 16<<20})
			require.NoError(b, err)
			require.NoError(b, h.Update(func(tx *heap.Tx) error {
				var prev *checkBenchNode
				for i := range n {
					node, err := heap.New[checkBenchNode](tx)
					if err != nil {
						return err
					}
					node.Key, node.Next, prev = uint64(i), prev, node
				}
				return nil
			}))
			require.NoError(b, h.Close())
			b.ReportAllocs()
			b.ResetTimer()
			var st recovery.CheckStats
			for b.Loop() {
				st, err = recovery.CheckFileStats(path, func(p recovery.Problem) bool {
					b.Fatal(p)
					return false
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			if st.Objects != int64(n) {
				b.Fatalf("checked %d objects, want %d", st.Objects, n)
			}
			b.ReportMetric(float64(st.Objects)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
		})
	}
}

// TestPlainObjectIsASubset checks that the fast path of the pointer rules
// accepts nothing that the full rules refuse, for every object pointer
// of a pool and values all over it: every 8 bytes of the slabs in use,
// odd addresses, the metadata and past the end.
func TestPlainObjectIsASubset(t *testing.T) {
	p := newCheckPool(t)
	bad, accepted, err := recovery.PlainObjectDisagreements(p.path, func(base uint64) []uint64 {
		vs := []uint64{base, base + 1, base + p.hdr.Size - 8, base + p.hdr.Size, base - 8, 1, 1 << 63}
		end := p.hdr.SlabOffset(uint32(p.hdr.Slabs - 1))
		for off := p.hdr.SlabOff - 256; off < end; off += 8 {
			vs = append(vs, base+off)
		}
		for off := p.hdr.SlabOff; off < end; off += 4099 {
			vs = append(vs, base+off)
		}
		return vs
	})
	require.NoError(t, err)
	assert.Empty(t, bad[:min(len(bad), 5)], "%d values accepted by the fast path are refused by the rules", len(bad))
	assert.NotZero(t, accepted, "the fast path accepted nothing")
}
