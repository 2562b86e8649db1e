package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/recovery"
)

func newTypesCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "types POOL",
		Short: "List the types stored in a pool, with their size, field layout and pointer offsets",
		Long: `Types lists the type descriptors stored in the pool's type table, by type id:
each type's size and alignment, its fields flattened (nested structs as
"In.X", arrays whole) with offset, size and Go type, and the pointer words
the swizzler rewrites and the checker follows, with their kind (object,
unsafe, string or slice data) and the type they point to. The pool is
recovered in memory first, as Open would, and never written.`,
		Args: cobra.ExactArgs(1),
		RunE: readCommand(&jsonOut, func(path string, p *recovery.PoolFile) printer {
			return newTypesResult(path, p.Image())
		}),
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}

type typesResult struct {
	Pool  string     `json:"pool"`
	Types []typeJSON `json:"types"`
}

type typeJSON struct {
	ID    uint32 `json:"id"`
	Name  string `json:"name"`
	Size  uint32 `json:"size"`
	Align uint32 `json:"align"`
	// Hash is the layout hash a Go type must match to open the pool.
	Hash     string        `json:"hash"`
	Root     bool          `json:"root"`
	Fields   []fieldJSON   `json:"fields"`
	Pointers []pointerJSON `json:"pointers"`
}

type fieldJSON struct {
	Path   string `json:"path"`
	Offset uint32 `json:"offset"`
	Size   uint32 `json:"size"`
	Type   string `json:"type"`
}

type pointerJSON struct {
	Field  string `json:"field"`
	Offset uint32 `json:"offset"`
	Kind   string `json:"kind"`
	Target string `json:"target,omitempty"`
}

func newTypesResult(path string, img *recovery.Image) *typesResult {
	r := &typesResult{Pool: path, Types: []typeJSON{}}
	for i := range img.Types {
		td := &img.Types[i]
		id := uint32(i + 1)
		t := typeJSON{
			ID: id, Name: td.Name, Size: td.Size, Align: td.Align, Hash: fmt.Sprintf("%016x", td.Hash),
			Root:   img.State.RootOff != 0 && img.State.RootType == id,
			Fields: []fieldJSON{}, Pointers: []pointerJSON{},
		}
		for _, f := range td.Fields {
			t.Fields = append(t.Fields, fieldJSON{Path: f.Path, Offset: f.Offset, Size: f.Size, Type: f.Type})
		}
		for _, p := range td.Ptrs {
			t.Pointers = append(t.Pointers, pointerJSON{Field: p.Field, Offset: p.Offset, Kind: p.Kind.String(), Target: p.Target})
		}
		r.Types = append(r.Types, t)
	}
	return r
}

func (r *typesResult) print(out io.Writer) {
	fmt.Fprintf(out, "%s: %s\n", r.Pool, plural(len(r.Types), "type"))
	for _, t := range r.Types {
		root := ""
		if t.Root {
			root = " (root)"
		}
		fmt.Fprintf(out, "\ntype %d: %s%s, %d bytes, align %d, layout hash %s\n", t.ID, t.Name, root, t.Size, t.Align, t.Hash)
		tw := newTable(out)
		fmt.Fprintln(tw, "  offset\tsize\tfield\ttype")
		for _, f := range t.Fields {
			fmt.Fprintf(tw, "  %d\t%d\t%s\t%s\n", f.Offset, f.Size, orValue(f.Path), f.Type)
		}
		tw.Flush()
		if len(t.Pointers) == 0 {
			fmt.Fprintln(out, "  no pointers")
			continue
		}
		tw = newTable(out)
		fmt.Fprintln(tw, "  pointer at\tkind\tfield\tpoints to")
		for _, p := range t.Pointers {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", p.Offset, p.Kind, orValue(p.Field), orAnything(p.Target))
		}
		tw.Flush()
	}
}

// orValue names the field of a type that is not a struct, whose path is
// empty.
func orValue(path string) string {
	if path == "" {
		return "(value)"
	}
	return path
}

func orAnything(target string) string {
	if target == "" {
		return "anything"
	}
	return target
}
