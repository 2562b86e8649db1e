package remote_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/filetest"
	"github.com/pmemgo/pmemgo/remote"
)

// lastWrittenPage returns the offset of the last page of file path past
// the first 64 KiB (which an open copies first) that holds data.
func lastWrittenPage(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for off := len(b) - 4096; off >= 64<<10; off -= 4096 {
		if !bytes.Equal(b[off:off+4096], make([]byte, 4096)) {
			return int64(off)
		}
	}
	t.Fatal("no page written past 64 KiB")
	return 0
}

func scrubNode(t *testing.T, addr string) []remote.Problem {
	t.Helper()
	problems, err := remote.ScrubNode(t.Context(), addr, nil)
	require.NoError(t, err)
	return problems
}

// TestBitFlipScrubAndRepair flips a bit in a page of a plain and of a
// sealed region file on a running node: a scrub names the region and the
// page; a client with a complete backup reads the right bytes from its
// backup and repairs the node, after which the scrub finds nothing and a
// client with an empty backup reads the pool from the node.
func TestBitFlipScrubAndRepair(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	for _, tc := range []struct {
		name   string
		sealed bool
	}{{"plain", false}, {"sealed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			node := startNode(t, t.TempDir(), "127.0.0.1:0")
			dir := t.TempDir()
			var key []byte
			if tc.sealed {
				key = newKey(t)
			}
			opts := openOpts(dir, "a.backup")
			opts.Size, opts.Heap.Key = 8<<20, key
			h, err := remote.Open(node.url("g"), opts)
			require.NoError(t, err)
			build(t, h, 30)
			require.NoError(t, h.Close())
			assert.Empty(t, scrubNode(t, node.addr))

			regionPath := filepath.Join(node.dir, "g.region")
			page := lastWrittenPage(t, regionPath)
			filetest.FlipByte(t, regionPath, page+100)
			assert.Equal(t, []remote.Problem{{Region: "g", Offset: page, Err: "the page does not match its checksum"}},
				scrubNode(t, node.addr))

			var logs syncBuffer
			opts = openOpts(dir, "a.backup")
			opts.Heap.Key = key
			opts.Heap.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			h, err = remote.Open(node.url("g"), opts)
			require.NoError(t, err)
			poolOff := page
			if tc.sealed {
				poolOff = (page - 4096) / 2
			}
			within(t, time.Minute, func() {
				touched = h.Device().Bytes()[poolOff]
				verify(t, h, 30)
			})
			waitFor(t, 10*time.Second, func() bool {
				return strings.Contains(logs.String(), "region g: the page at offset "+itoa(int(page))+" does not match its checksum")
			})
			waitFor(t, 20*time.Second, func() bool { return remote.Resynced(h.Device()) && len(scrubNode(t, node.addr)) == 0 })
			require.NoError(t, h.Close())
			st, err := remote.QueryStatus(t.Context(), node.addr, nil)
			require.NoError(t, err)
			assert.Positive(t, st.DamagedReads)

			opts = openOpts(dir, "cold.backup")
			opts.Heap.Key = key
			h, err = remote.Open(node.url("g"), opts)
			require.NoError(t, err)
			verify(t, h, 30)
			require.NoError(t, h.Close())

			node.kill()
			var problems []remote.Problem
			require.NoError(t, remote.ScrubDir(node.dir, func(p remote.Problem) { problems = append(problems, p) }))
			assert.Empty(t, problems)
		})
	}
}
