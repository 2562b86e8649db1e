package remote_test

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/remote"
)

// Blob is the object of the benchmarks' pools: 16 KiB, four pages.
type Blob struct {
	ID   int
	Hits int
	Data [16368]byte
}

// Blobs is the root of the benchmarks' pools.
type Blobs struct {
	All []*Blob
}

// fillBlobs creates the pool at url and allocates n blobs in it, each
// with its data written, 128 to a transaction.
func fillBlobs(b *testing.B, url, backup string, size int64, n int) {
	b.Helper()
	opts := &remote.Options{Backup: backup, Insecure: true, Size: size}
	opts.Heap.SlabSize = 1 << 20
	h, err := remote.Open(url, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			b.Fatal(err)
		}
	}()
	err = h.Update(func(tx *heap.Tx) error {
		root, err := heap.Root[Blobs](tx)
		if err != nil {
			return err
		}
		all, err := heap.MakeSlice[*Blob](tx, n, n)
		if err != nil {
			return err
		}
		return heap.Set(tx, &root.All, all)
	})
	if err != nil {
		b.Fatal(err)
	}
	for lo := 0; lo < n; lo += 128 {
		err := h.Update(func(tx *heap.Tx) error {
			root, err := heap.Root[Blobs](tx)
			if err != nil {
				return err
			}
			if err := heap.AddSlice(tx, root.All[lo:min(lo+128, n)]); err != nil {
				return err
			}
			for i := lo; i < min(lo+128, n); i++ {
				bl, err := heap.New[Blob](tx)
				if err != nil {
					return err
				}
				bl.ID = i
				for k := 0; k < len(bl.Data); k += 512 {
					bl.Data[k] = byte(i + k)
				}
				root.All[i] = bl
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// readSome reads every byte of the blobs picked by idx and checks them.
func readSome(b *testing.B, h *heap.Heap, idx []int) {
	err := h.View(func(tx *heap.Tx) error {
		root, err := heap.Root[Blobs](tx)
		if err != nil {
			return err
		}
		for _, i := range idx {
			bl := root.All[i]
			sum := 0
			for _, c := range bl.Data {
				sum += int(c)
			}
			if bl.ID != i || bl.Data[512] != byte(i+512) || sum < 0 {
				return fmt.Errorf("blob %d reads back as %d", i, bl.ID)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkOpenRead1Percent opens a 1 GiB remote pool and reads 1% of its
// objects (16 KiB each, picked at random), with several readahead sizes,
// against copying the whole pool to a local file first and opening that.
// Run with TMPDIR on a memory file system (/dev/shm) so that the node's
// and the client's files cost what memory costs.
func BenchmarkOpenRead1Percent(b *testing.B) {
	const size, n = 1 << 30, 60000
	node := startNode(b, b.TempDir(), "127.0.0.1:0")
	dir := b.TempDir()
	url := node.url("big")
	fillBlobs(b, url, filepath.Join(dir, "fill.backup"), size, n)
	rng := rand.New(rand.NewPCG(1, 2))
	idx := make([]int, n/100)
	for i := range idx {
		idx[i] = rng.IntN(n)
	}
	var copyFirst time.Duration
	b.Run("copy-first", func(b *testing.B) {
		for i := range b.N {
			t0 := time.Now()
			path := filepath.Join(dir, fmt.Sprintf("c%d.pool", i))
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := remote.Download(b.Context(), url, nil, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
			h, err := heap.Open(path, nil)
			if err != nil {
				b.Fatal(err)
			}
			readSome(b, h, idx)
			if err := h.Close(); err != nil {
				b.Fatal(err)
			}
			copyFirst = time.Since(t0)
			b.StopTimer()
			os.Remove(path)
			b.StartTimer()
		}
	})
	for _, ra := range []int64{0, 4 << 10, 16 << 10, 64 << 10} {
		name := fmt.Sprintf("remote-readahead-%dk", ra>>10)
		if ra == 0 {
			// Opening and closing alone: the agent process's start, the
			// pages recovery reads, and the close's header writes.
			name = "remote-open-close-only"
		}
		b.Run(name, func(b *testing.B) {
			var took time.Duration
			for i := range b.N {
				t0 := time.Now()
				h, err := remote.Open(url, &remote.Options{Backup: filepath.Join(dir, fmt.Sprintf("r%d-%d.backup", ra, i)),
					Insecure: true, Readahead: ra})
				if err != nil {
					b.Fatal(err)
				}
				if ra > 0 {
					readSome(b, h, idx)
				}
				if err := h.Close(); err != nil {
					b.Fatal(err)
				}
				took += time.Since(t0)
			}
			b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/open+read")
			if copyFirst > 0 {
				b.ReportMetric(float64(copyFirst)/(float64(took)/float64(b.N)), "x-faster-than-copy")
			}
		})
	}
}

// BenchmarkFault measures the latency of first touches of cold pages of a
// remote pool, one at a time, against the round trip of a 4 KiB message
// over loopback TCP.
func BenchmarkFault(b *testing.B) {
	node := startNode(b, b.TempDir(), "127.0.0.1:0")
	dir := b.TempDir()
	const size = 256 << 20
	opts := &remote.Options{Backup: filepath.Join(dir, "a.backup"), Insecure: true, Size: size}
	h, err := remote.Open(node.url("f"), opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Close(); err != nil {
		b.Fatal(err)
	}
	rtt := loopbackRTT(b, 2000)
	nodeRead, err := remote.NodeReadLatency(node.addr, "f", size, 2000)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	sink := 0
	b.ResetTimer()
	for round := 0; len(lat) < b.N; round++ {
		b.StopTimer()
		h, err := remote.Open(node.url("f"), &remote.Options{Backup: filepath.Join(dir, fmt.Sprintf("%d.backup", round)),
			Insecure: true, Readahead: remote.PageSize})
		if err != nil {
			b.Fatal(err)
		}
		mem := h.Device().Bytes()
		b.StartTimer()
		// The upper half of the pool is never touched by an open.
		for off := size / 2; off < size && len(lat) < b.N; off += remote.PageSize {
			t0 := time.Now()
			sink += int(mem[off])
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		if err := h.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	if sink != 0 {
		b.Fatal("cold pages of a new pool are not zero")
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(float64(p50.Nanoseconds())/1e3, "fault-p50-us")
	b.ReportMetric(float64(p99.Nanoseconds())/1e3, "fault-p99-us")
	b.ReportMetric(float64(rtt.Nanoseconds())/1e3, "rtt4k-p50-us")
	b.ReportMetric(float64(p50)/float64(rtt), "p50/rtt")
	// The node read is the agent's fetch without the fault: what the node
	// adds to the round trip, and what the fault adds to the fetch.
	b.ReportMetric(float64(nodeRead.Nanoseconds())/1e3, "node-read-p50-us")
}

// loopbackRTT returns the median round trip of a 17-byte request
// answered by 4 KiB over loopback TCP by another process: what a page read
// costs the network and the two processes' wake-ups.
func loopbackRTT(b *testing.B, n int) time.Duration {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=echo")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("tcp", strings.TrimSpace(addr))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req, page := make([]byte, 17), make([]byte, remote.PageSize)
	lat := make([]time.Duration, n)
	for i := range lat {
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, page); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	return lat[n/2]
}

// BenchmarkCapSkewed reads and updates a pool four times larger than the
// local memory cap, 90% of operations on 10% of the objects; one
// operation in ten is a transaction changing one 8-byte field. It
// reports throughput and the dirty-data amplification of line-granular
// write-back (bytes sent to the node per byte changed) against what
// tracking dirty data by 4 KiB page would have sent.
func BenchmarkCapSkewed(b *testing.B) {
	const n = 4000 // 16 KiB each: 64 MiB of objects
	node := startNode(b, b.TempDir(), "127.0.0.1:0")
	dir := b.TempDir()
	url := node.url("skew")
	fillBlobs(b, url, filepath.Join(dir, "a.backup"), 80<<20, n)
	opts := &remote.Options{Backup: filepath.Join(dir, "a.backup"), Insecure: true, LocalCap: 16 << 20}
	h, err := remote.Open(url, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	before, _ := remote.Stats(h.Device())
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func() int {
		if rng.IntN(10) < 9 {
			return rng.IntN(n / 10)
		}
		return n/10 + rng.IntN(n-n/10)
	}
	updates := 0
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		k := pick()
		if i%10 == 9 {
			updates++
			err = h.Update(func(tx *heap.Tx) error {
				root, err := heap.Root[Blobs](tx)
				if err != nil {
					return err
				}
				bl := root.All[k]
				return heap.Set(tx, &bl.Hits, bl.Hits+1)
			})
		} else {
			err = h.View(func(tx *heap.Tx) error {
				root, err := heap.Root[Blobs](tx)
				if err != nil {
					return err
				}
				sum := 0
				for j := 0; j < len(root.All[k].Data); j += 64 {
					sum += int(root.All[k].Data[j])
				}
				if sum < 0 {
					return fmt.Errorf("blob %d", k)
				}
				return nil
			})
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	st, _ := remote.Stats(h.Device())
	changed := float64(8 * max(updates, 1))
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(st.LinesWrittenBack-before.LinesWrittenBack)*remote.LineSize/changed, "line-bytes/changed")
	b.ReportMetric(float64(st.PagesWrittenBack-before.PagesWrittenBack)*remote.PageSize/changed, "page-bytes/changed")
	b.ReportMetric(float64(st.Evicted-before.Evicted), "pages-evicted")
}
