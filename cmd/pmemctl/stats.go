package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

func newStatsCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "stats POOL",
		Short: "Print, per type, the slabs, objects, bytes used and free, and fragmentation",
		Long: `Stats reads the slab headers and prints, for each type and kind of slab
(objects, or arrays: the backing stores of slices and the bytes of strings),
the slabs it holds, its allocated objects, the bytes of their slots, the
bytes of the free slots in its slabs, and its fragmentation.

Fragmentation is 1 - used/capacity over the type's slabs: the share of the
slot space they hold that is free. A slab holds one type and one slot size,
so that space can be reused only by allocations of the same type and size,
not by anything else, until the slab empties and returns to the pool.

The pool is recovered in memory first, as Open would, and never written.`,
		Args: cobra.ExactArgs(1),
		RunE: readCommand(&jsonOut, func(path string, p *recovery.PoolFile) printer {
			return newStatsResult(path, p.Pool)
		}),
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}

type statsResult struct {
	Pool     string `json:"pool"`
	Size     uint64 `json:"size"`
	SlabSize uint64 `json:"slab_size"`
	// Slabs is the number of slabs; SlabsUsed of them hold something.
	Slabs     uint64     `json:"slabs"`
	SlabsUsed uint64     `json:"slabs_used"`
	Types     []statsRow `json:"types"`
	Total     statsRow   `json:"total"`
}

// statsRow is what the pool holds of one type in one kind of slab.
type statsRow struct {
	Type    string `json:"type,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Slabs   uint64 `json:"slabs"`
	Objects uint64 `json:"objects"`
	// UsedBytes is the size of the allocated slots, FreeBytes that of the
	// free ones; together they are the slot space of the slabs.
	UsedBytes     uint64  `json:"used_bytes"`
	FreeBytes     uint64  `json:"free_bytes"`
	Fragmentation float64 `json:"fragmentation"`
}

func (r *statsRow) add(slabs uint64, sh *layout.SlabHeader) {
	r.Slabs += slabs
	r.Objects += uint64(sh.Used)
	r.UsedBytes += uint64(sh.Used) * uint64(sh.SlotSize)
	r.FreeBytes += uint64(sh.Slots-sh.Used) * uint64(sh.SlotSize)
	if capacity := r.UsedBytes + r.FreeBytes; capacity > 0 {
		r.Fragmentation = float64(r.FreeBytes) / float64(capacity)
	}
}

func newStatsResult(path string, p *recovery.Pool) *statsResult {
	h := &p.Header
	r := &statsResult{Pool: path, Size: h.Size, SlabSize: h.SlabSize, Slabs: h.Slabs, Types: []statsRow{}}
	rows := map[[2]string]*statsRow{}
	p.Slabs.Heads(func(_ uint32, sh layout.SlabHeader) {
		key := [2]string{typeName(p.Types, sh.Type), kindName(sh.Kind)}
		row := rows[key]
		if row == nil {
			row = &statsRow{Type: key[0], Kind: key[1]}
			rows[key] = row
		}
		row.add(uint64(sh.Extent), &sh)
		r.Total.add(uint64(sh.Extent), &sh)
	})
	r.SlabsUsed = r.Total.Slabs
	for _, row := range rows {
		r.Types = append(r.Types, *row)
	}
	slices.SortFunc(r.Types, func(a, b statsRow) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Kind, b.Kind))
	})
	return r
}

func (r *statsResult) print(out io.Writer) {
	fmt.Fprintf(out, "%s: %s, %d of %d slabs of %s in use\n", r.Pool, humanBytes(r.Size), r.SlabsUsed, r.Slabs, humanBytes(r.SlabSize))
	tw := newTable(out)
	fmt.Fprintln(tw, "type\tkind\tslabs\tobjects\tused\tfree\tfragmentation")
	row := func(s *statsRow) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.Type, s.Kind, s.Slabs, s.Objects,
			humanBytes(s.UsedBytes), humanBytes(s.FreeBytes), percent(s.Fragmentation))
	}
	for i := range r.Types {
		row(&r.Types[i])
	}
	total := r.Total
	total.Type = "total"
	row(&total)
	tw.Flush()
}
