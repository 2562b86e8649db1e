package heap_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
)

// The graph of this test has cycles, shared vertices, strings, slices of
// pointers and of bytes, arrays of pointers, a nested struct and an
// unsafe.Pointer.
type Inner struct {
	Label   string
	Peer    *Vertex
	Weights [3]float64
}

type Vertex struct {
	ID    uint64
	Name  string
	Edges []*Vertex
	Ring  [2]*Vertex
	In    Inner
	Blob  []byte
	Any   unsafe.Pointer
}

type Graph struct {
	Vertices []*Vertex
	ByID     [8]*Vertex
	Title    string
}

const graphSize = 500

func buildGraph(tx *heap.Tx) error {
	g, err := heap.Root[Graph](tx)
	if err != nil {
		return err
	}
	if g.Title, err = heap.NewString(tx, "a graph"); err != nil {
		return err
	}
	if g.Vertices, err = heap.MakeSlice[*Vertex](tx, graphSize, graphSize); err != nil {
		return err
	}
	for i := range graphSize {
		v, err := heap.New[Vertex](tx)
		if err != nil {
			return err
		}
		v.ID = uint64(i)
		g.Vertices[i] = v
	}
	for i, v := range g.Vertices {
		var err error
		if v.Name, err = heap.NewString(tx, fmt.Sprintf("vertex-%d", i)); err != nil {
			return err
		}
		if v.Edges, err = heap.MakeSlice[*Vertex](tx, 2, 3); err != nil {
			return err
		}
		v.Edges[0], v.Edges[1] = g.Vertices[(i+1)%graphSize], g.Vertices[(i*7)%graphSize]
		v.Ring = [2]*Vertex{g.Vertices[(i+graphSize-1)%graphSize], v}
		if v.In.Label, err = heap.NewString(tx, strings.Repeat("x", i%50)); err != nil {
			return err
		}
		v.In.Peer = g.Vertices[i/2]
		v.In.Weights = [3]float64{float64(i), 0.5, -float64(i)}
		if v.Blob, err = heap.MakeSlice[byte](tx, i%300, i%300+5); err != nil {
			return err
		}
		for k := range v.Blob {
			v.Blob[k] = byte(i + k)
		}
		v.Any = unsafe.Pointer(g.Vertices[i/3])
	}
	for k := range g.ByID {
		g.ByID[k] = g.Vertices[k*61%graphSize]
	}
	return nil
}

// verifyGraph checks every field of the graph and returns the first
// difference.
func verifyGraph(h *heap.Heap) error {
	return h.View(func(tx *heap.Tx) error {
		g, err := heap.Root[Graph](tx)
		if err != nil {
			return err
		}
		if g.Title != "a graph" || len(g.Vertices) != graphSize {
			return fmt.Errorf("graph header: %q, %d vertices", g.Title, len(g.Vertices))
		}
		vs := g.Vertices
		for i, v := range vs {
			want := []struct {
				ok   bool
				what string
			}{
				{v.ID == uint64(i), "ID"},
				{v.Name == fmt.Sprintf("vertex-%d", i), "Name"},
				{len(v.Edges) == 2 && cap(v.Edges) == 3 && v.Edges[0] == vs[(i+1)%graphSize] && v.Edges[1] == vs[(i*7)%graphSize], "Edges"},
				{v.Ring == [2]*Vertex{vs[(i+graphSize-1)%graphSize], v}, "Ring"},
				{v.In.Label == strings.Repeat("x", i%50), "In.Label"},
				{v.In.Peer == vs[i/2], "In.Peer"},
				{v.In.Weights == [3]float64{float64(i), 0.5, -float64(i)}, "In.Weights"},
				{len(v.Blob) == i%300 && cap(v.Blob) == i%300+5, "Blob length"},
				{v.Any == unsafe.Pointer(vs[i/3]), "Any"},
			}
			for _, w := range want {
				if !w.ok {
					return fmt.Errorf("vertex %d: field %s is wrong", i, w.what)
				}
			}
			for k, b := range v.Blob {
				if b != byte(i+k) {
					return fmt.Errorf("vertex %d: Blob[%d] = %d", i, k, b)
				}
			}
		}
		for k, v := range g.ByID {
			if v != vs[k*61%graphSize] {
				return fmt.Errorf("ByID[%d] is wrong", k)
			}
		}
		return nil
	})
}

// TestCrossProcessRoundTrip builds a graph, then re-runs this test binary
// as a child that opens the pool at a forced new base and verifies every
// field through native pointers.
func TestCrossProcessRoundTrip(t *testing.T) {
	if path := os.Getenv("PMEMGO_CHILD_POOL"); path != "" {
		childVerify(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "graph.pool")
	h, err := heap.Open(path, &heap.Options{Size: 8 << 20})
	require.NoError(t, err)
	require.NoError(t, h.Update(buildGraph))
	require.NoError(t, verifyGraph(h))
	base := h.Base()
	require.NoError(t, h.Close())

	for run := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcessRoundTrip$", "-test.v")
		cmd.Env = append(os.Environ(), "PMEMGO_CHILD_POOL="+path)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		require.NoError(t, err, "child %d:\n%s", run, out.String())
		require.Contains(t, out.String(), "verified 500 vertices", out.String())
		require.NotContains(t, out.String(), fmt.Sprintf("new base %#x", base))
		t.Logf("child %d: %s", run, lineWith(out.String(), "verified"))
	}
	checkPool(t, path)
}

func childVerify(t *testing.T, path string) {
	h, err := heap.Open(path, &heap.Options{ForceRelocate: true})
	require.NoError(t, err)
	defer h.Close()
	r := h.Recovery()
	if !r.Relocated || r.NewBase == r.OldBase {
		require.NoError(t, errors.New("the child did not land at a new base"))
	}
	require.NoError(t, verifyGraph(h))
	fmt.Printf("verified %d vertices: old base %#x, new base %#x, %d pointers rewritten in %v\n",
		graphSize, r.OldBase, r.NewBase, r.Swizzle.Pointers, r.Swizzle.Duration)
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
