package main

import (
	"fmt"
	"io"
	"math"
	"os"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/layout"
)

type createOptions struct {
	size, slabSize, logSize, maxSize sizeValue
	key                              keyFlag
}

func newCreateCmd() *cobra.Command {
	var o createOptions
	cmd := &cobra.Command{
		Use:   "create POOL --size SIZE",
		Short: "Create a new, empty pool",
		Long: `Create makes a new, empty pool file of the given size. Sizes are bytes with
an optional binary unit: 4096, 64K, 64M, 1G, 1.5GiB. The pool is written
to a temporary file next to POOL and renamed into place once complete, so
that POOL never names half a pool. An existing POOL is never overwritten.
With --key-file the pool is sealed: encrypted and authenticated line by
line under the key, so that only holders of the key can read it.`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if o.size == 0 {
				return usageError(fmt.Errorf("--size is required"))
			}
			if o.size > math.MaxInt64 || o.slabSize > math.MaxInt64 || o.logSize > math.MaxInt64 || o.maxSize > math.MaxInt64 {
				return usageError(fmt.Errorf("sizes must be below 8 EiB"))
			}
			return nil
		},
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runCreate(cmd.OutOrStdout(), args[0], o)
		}),
	}
	cmd.Flags().Var(&o.size, "size", "size of the pool, such as 64M or 1G (required)")
	cmd.Flags().Var(&o.slabSize, "slab-size", fmt.Sprintf("slab size, a power of two from %s to %s (default %s)",
		humanBytes(layout.MinSlabSize), humanBytes(layout.MaxSlabSize), humanBytes(layout.DefaultSlabSize)))
	cmd.Flags().Var(&o.maxSize, "max-size", fmt.Sprintf("size the pool may grow to (default: the file system's size, at most %s)", humanBytes(heap.DefaultMaxSize)))
	cmd.Flags().Var(&o.logSize, "log-size", "undo log size (default: a sixteenth of the pool, from 128 KiB to 64 MiB)")
	o.key.add(cmd)
	return cmd
}

func runCreate(out io.Writer, path string, o createOptions) error {
	g := layout.Geometry{Size: uint64(o.size), SlabSize: uint64(o.slabSize), LogSize: uint64(o.logSize), MaxSize: uint64(o.maxSize)}
	hdr, err := layout.NewHeader(g)
	if err != nil {
		return usageError(err)
	}
	if _, err := os.Lstat(path); err == nil {
		return usageError(fmt.Errorf("%s exists: create never overwrites a file", path))
	}
	key, err := o.key.load()
	if err != nil {
		return err
	}
	h, err := heap.Open(path, &heap.Options{Size: int64(o.size), MaxSize: int64(o.maxSize), SlabSize: int64(o.slabSize), LogSize: int64(o.logSize), Key: key})
	if err != nil {
		return err
	}
	maxSize := h.Stats().MaxSize
	sealed := ""
	if key != nil {
		sealed = "sealed "
	}
	if err := h.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "created %s%s: %s, %d slabs of %s, undo log %s, type table %s; may grow to %s\n", sealed, path,
		humanBytes(hdr.Size), hdr.Slabs, humanBytes(hdr.SlabSize), humanBytes(hdr.LogSize), humanBytes(hdr.TypeSize), humanBytes(maxSize))
	return nil
}
