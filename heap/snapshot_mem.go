package heap

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// snapMemory supplies the blocks snapshots keep lines and index entries
// in: mapped memory outside the Go heap, touched ahead of use.
//
// Why: a snapshot open under a writer keeps some 40 MB of lines a second
// (170k small transactions, a few first changes each). In the Go heap,
// that growth raised the collector's goal so that the writer's own
// short-lived allocations (a transaction's Tx, 256 bytes) kept landing on
// fresh pages, and each fresh page, like each page of the blocks
// themselves, costs a page fault at its first touch: on a virtual machine
// with shadow paging 15-30 us, more than the copies of the 64 lines a
// page holds. Measured on the writer's thread: 52-63 faults per 1000
// transactions with a snapshot open against 5 without, 1.2 us of
// processor time added to each transaction.
//
// Blocks are huge pages (2 MiB, advised with MADV_HUGEPAGE where the
// system offers transparent huge pages): the filler then takes one fault
// per 32768 lines rather than one per 64, and the writer's stores into the
// arena and the index miss the TLB once per block. With 64 KiB blocks, a
// snapshot open under that writer, never read, cost it 6-14% of its rate;
// with huge pages 1-5% (BenchmarkSnapshotWriter, ratio-open).
//
// A goroutine of the heap's, started with the first block asked for and
// stopped at Close, keeps aheadBlocks blocks of lines, and index blocks
// for as many lines, mapped and touched. Closed snapshots give their
// blocks back, up to keepBlocks blocks of lines and their index blocks,
// and their bitmap, so that backups taken one after another
// reuse warm memory. Blocks are unmapped when not kept, and all at Close;
// a snapshot reads its blocks only under its lock, after checking that it
// is still open, and drop takes that lock, so no block is read after it
// is given back.
type snapMemory struct {
	mu     sync.Mutex
	arena  [][]byte
	index  [][]keptAt
	bits   []uint64
	heads  []int32
	wake   chan struct{} // nil until the filler is started
	closed bool
}

const (
	// aheadBlocks blocks of lines (4 MiB) and the index blocks for as
	// many lines are ready: the arena of a snapshot under that writer
	// takes some 20 blocks a second.
	aheadBlocks = 2
	// keepBlocks blocks of lines (16 MiB) and the index blocks for as
	// many lines are kept from closed snapshots, so that backups taken
	// one after another reuse them.
	keepBlocks = 8
	pageSize   = 4096
	// hugePage is the size of a transparent huge page on amd64 and arm64
	// with 4 KiB pages; blocks are multiples of it.
	hugePage = 2 << 20
	// indexBlockBytes is the size of a block of keptBlock entries.
	indexBlockBytes = keptBlock * int(unsafe.Sizeof(keptAt{}))
	// indexPerArena is how many blocks of lines one index block covers.
	indexPerArena = keptBlock / (arenaBlock / lineSize)
	aheadIndex    = (aheadBlocks + indexPerArena - 1) / indexPerArena
	keepIndex     = (keepBlocks + indexPerArena - 1) / indexPerArena
)

// mapBlock maps n bytes of zeroed private memory, a multiple of hugePage,
// aligned to hugePage and advised to be backed by huge pages.
func mapBlock(n int) ([]byte, error) {
	// Mapping hugePage more and unmapping what lies outside the aligned
	// part aligns the block whatever the kernel's placement. The blocks
	// are mapped and unmapped by address (MmapPtr), as unix.Munmap
	// unmaps only whole mappings that unix.Mmap made.
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n+hugePage), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mapping %d bytes for a snapshot's lines: %w", n, err)
	}
	head := -uintptr(p) & (hugePage - 1)
	if head > 0 {
		unmapRange(p, head)
	}
	start := unsafe.Add(p, head)
	if tail := hugePage - head; tail > 0 {
		unmapRange(unsafe.Add(start, n), tail)
	}
	b := unsafe.Slice((*byte)(start), n)
	// Without transparent huge pages (EINVAL), the block is made of
	// small pages: slower to touch, as correct.
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	return b, nil
}

func unmapBlock(b []byte) {
	unmapRange(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}

func unmapRange(p unsafe.Pointer, n uintptr) {
	if err := unix.MunmapPtr(p, n); err != nil {
		fmt.Fprintf(os.Stderr, "pmemgo: unmapping a snapshot block: %v\n", err)
	}
}

// asIndex views a mapped block as index entries.
func asIndex(b []byte) []keptAt {
	return unsafe.Slice((*keptAt)(unsafe.Pointer(unsafe.SliceData(b))), keptBlock)
}

// mapIndex maps a block of index entries.
func mapIndex() ([]keptAt, error) {
	b, err := mapBlock(indexBlockBytes)
	if err != nil {
		return nil, err
	}
	return asIndex(b), nil
}

// indexBytes is the mapped block that x views.
func indexBytes(x []keptAt) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), indexBlockBytes)
}

// arenaBlock returns a block of arenaBlock bytes.
func (m *snapMemory) arenaBlock() ([]byte, error) {
	return takeBlock(m, &m.arena, func() ([]byte, error) { return mapBlock(arenaBlock) })
}

// indexBlock returns a block of keptBlock entries.
func (m *snapMemory) indexBlock() ([]keptAt, error) {
	return takeBlock(m, &m.index, mapIndex)
}

// takeBlock returns the last block of ready, which m.mu guards, or a new
// one when there is none, and wakes the filler.
func takeBlock[B any](m *snapMemory, ready *[]B, make func() (B, error)) (B, error) {
	m.mu.Lock()
	m.kick()
	n := len(*ready)
	if n == 0 {
		m.mu.Unlock()
		return make()
	}
	b := (*ready)[n-1]
	*ready = (*ready)[:n-1]
	m.mu.Unlock()
	return b, nil
}

// kick starts the filler or wakes it; m.mu is held.
func (m *snapMemory) kick() {
	if m.closed {
		return
	}
	if m.wake == nil {
		m.wake = make(chan struct{}, 1)
		go m.fill(m.wake)
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// fill maps and touches blocks until aheadBlocks of each kind are ready,
// each time it is woken, until wake is closed.
func (m *snapMemory) fill(wake chan struct{}) {
	for range wake {
		for {
			m.mu.Lock()
			needArena := !m.closed && len(m.arena) < aheadBlocks
			needIndex := !m.closed && len(m.index) < aheadIndex
			m.mu.Unlock()
			if !needArena && !needIndex {
				break
			}
			var a, x []byte
			var errA, errX error
			if needArena {
				a, errA = mapBlock(arenaBlock)
			}
			if needIndex {
				x, errX = mapBlock(indexBlockBytes)
			}
			if errA != nil || errX != nil {
				// Out of memory or mappings: the blocks are mapped as
				// needed instead, and the snapshot reports the failure.
				for _, b := range [][]byte{a, x} {
					if b != nil {
						unmapBlock(b)
					}
				}
				break
			}
			touched(a)
			touched(x)
			m.mu.Lock()
			if m.closed {
				m.mu.Unlock()
				for _, b := range [][]byte{a, x} {
					if b != nil {
						unmapBlock(b)
					}
				}
				return
			}
			// Closed snapshots may have given blocks back meanwhile (put):
			// what would take the store past its bound is unmapped.
			if a != nil && len(m.arena) < keepBlocks {
				m.arena, a = append(m.arena, a), nil
			}
			if x != nil && len(m.index) < keepIndex {
				m.index, x = append(m.index, asIndex(x)), nil
			}
			m.mu.Unlock()
			for _, b := range [][]byte{a, x} {
				if b != nil {
					unmapBlock(b)
				}
			}
		}
	}
}

// touched writes a zero to each page of b, which is zero, so that its
// page faults are taken now, and returns b.
func touched(b []byte) []byte {
	for i := 0; i < len(b); i += pageSize {
		b[i] = 0
	}
	return b
}

// bitmap returns zeroed slices of n bits words and r region heads, the
// kept ones when they are large enough.
func (m *snapMemory) bitmap(n, r int64) ([]uint64, []int32) {
	m.mu.Lock()
	bits, heads := m.bits, m.heads
	m.bits, m.heads = nil, nil
	m.mu.Unlock()
	if int64(cap(bits)) < n {
		bits = make([]uint64, n)
	} else {
		bits = bits[:n]
		clear(bits)
	}
	if int64(cap(heads)) < r {
		heads = make([]int32, r)
	} else {
		heads = heads[:r]
		clear(heads)
	}
	return bits, heads
}

// put takes back the blocks and the bitmap of a closed snapshot: blocks
// as many as there is room for, the others unmapped, and the bitmap if it
// is larger than the one kept.
func (m *snapMemory) put(arena [][]byte, x *keptIndex) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range arena {
		if m.closed || len(m.arena) >= keepBlocks {
			unmapBlock(b)
			continue
		}
		m.arena = append(m.arena, b)
	}
	for _, b := range x.blocks {
		if m.closed || len(m.index) >= keepIndex {
			unmapBlock(indexBytes(b))
			continue
		}
		m.index = append(m.index, b)
	}
	if !m.closed && cap(x.bits) > cap(m.bits) {
		m.bits, m.heads = x.bits, x.heads
	}
}

// drop stops the filler and unmaps every block kept.
func (m *snapMemory) drop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	if m.wake != nil {
		close(m.wake)
	}
	for _, b := range m.arena {
		unmapBlock(b)
	}
	for _, b := range m.index {
		unmapBlock(indexBytes(b))
	}
	m.arena, m.index, m.bits, m.heads = nil, nil, nil, nil
}
