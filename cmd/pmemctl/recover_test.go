package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
)

// TestRecoverCrashImages takes the image a crash leaves at every fence of
// a transaction and of a swizzle, and checks that recover turns each into
// a pool that check passes, leaks included.
func TestRecoverCrashImages(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(*heap.Tx) error // nil: crash in the swizzle of an open
		// want is what recover must report for at least one image.
		want string
	}{
		{"transaction", relinkGolden, "rolled back"},
		{"swizzle", nil, "finished a relocation that a crash interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			g := newGoldenPool(t, dir, "golden.pool", false)
			images := crashImages(t, g.path, tc.op)
			seen := 0
			for i, img := range images {
				crashed := filepath.Join(dir, fmt.Sprintf("crash-%d.pool", i))
				recovered := filepath.Join(dir, fmt.Sprintf("recovered-%d.pool", i))
				require.NoError(t, os.WriteFile(crashed, img, 0o644))
				out, stderr, code := pmemctl(t, "recover", crashed, "--output", recovered)
				require.Equal(t, exitOK, code, "image %d: %s", i, stderr)
				if assert.Contains(t, out, recovered+": 0 problems") && strings.Contains(out, tc.want) {
					seen++
				}
				_, _, code = pmemctl(t, "check", "--leaks", recovered)
				assert.Equal(t, exitOK, code, "image %d", i)
				// gc recovers the copy it collects, and finds nothing to free:
				// a transaction a crash interrupted leaves nothing allocated.
				out, stderr, code = pmemctl(t, "gc", crashed, "--output", filepath.Join(dir, fmt.Sprintf("collected-%d.pool", i)))
				assert.Equal(t, exitOK, code, "image %d: %s", i, stderr)
				assert.Contains(t, out, "freed      0 objects", "image %d", i)
				out, _, code = pmemctl(t, "info", "--json", recovered)
				assert.Equal(t, exitOK, code, "image %d", i)
				var info infoResult
				require.NoError(t, json.Unmarshal([]byte(out), &info))
				assert.Equal(t, []string{"clean"}, info.State, "image %d", i)
			}
			assert.Positive(t, seen, "no image of %d needed %q", len(images), tc.want)
			t.Logf("%d crash images recovered, %d of them with %q", len(images), seen, tc.want)
		})
	}
}

// relinkGolden changes the golden pool's root, links a new node and frees
// the last one, so that a crash interrupts allocation, free and update.
func relinkGolden(tx *heap.Tx) error {
	root, err := heap.Root[goldenRoot](tx)
	if err != nil {
		return err
	}
	n, err := heap.New[goldenNode](tx)
	if err != nil {
		return err
	}
	if n.Name, err = heap.NewString(tx, "node-new"); err != nil {
		return err
	}
	n.Next = root.Head
	if err := heap.Add(tx, root); err != nil {
		return err
	}
	root.Head = n
	root.Count++
	// The last node is the target of Any and of the first node's kids:
	// unlink it everywhere before freeing it.
	last := n.Next.Next.Next
	root.Any = nil
	if err := heap.Set(tx, &n.Next.Next.Next, nil); err != nil {
		return err
	}
	if err := heap.Set(tx, &n.Next.Next.Kids[0], nil); err != nil {
		return err
	}
	return errors.Join(heap.FreeString(tx, last.Name), heap.Free(tx, last))
}

func TestRecoverRefusesExistingOutput(t *testing.T) {
	dir := t.TempDir()
	g := newGoldenPool(t, dir, "golden.pool", false)
	for _, output := range []string{g.path, filepath.Join(dir, "other")} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "other"), []byte("keep me"), 0o644))
		before, err := os.ReadFile(output)
		require.NoError(t, err)
		for _, cmd := range []string{"recover", "gc"} {
			_, stderr, code := pmemctl(t, cmd, g.path, "--output", output)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, "exists")
			after, err := os.ReadFile(output)
			require.NoError(t, err)
			assert.Equal(t, before, after)
		}
	}
}
