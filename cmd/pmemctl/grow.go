package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
)

type growOptions struct {
	size, maxSize sizeValue
	timeout       time.Duration
	key           keyFlag
}

func newGrowCmd() *cobra.Command {
	var o growOptions
	cmd := &cobra.Command{
		Use:   "grow POOL --size SIZE",
		Short: "Grow an idle pool to a new size, in place",
		Long: `Grow makes an idle pool at least SIZE bytes long (rounded up to a multiple
of 4 KiB), as an allocation that finds no room does: the file is extended
and the new slabs are added after the old ones, so nothing moves, and a crash
leaves the pool at its old or its new size. A pool already that large is left
as it is. SIZE may not exceed the pool's maximum size, which --max-size
raises (or lowers, down to the pool's size) first.

The pool must not be open elsewhere: grow waits --timeout for its lock. A
sealed (encrypted) pool needs its --key-file; its file stays ciphertext.

Exit status: 0 when the pool has the size, 1 for a bad command line or a
size beyond the pool's maximum, 3 when the file is not a pool, cannot be
opened or cannot grow (no room on the file system).`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			if o.size == 0 {
				return usageError(fmt.Errorf("--size is required"))
			}
			if o.size > math.MaxInt64 || o.maxSize > math.MaxInt64 {
				return usageError(fmt.Errorf("sizes must be below 8 EiB"))
			}
			if o.maxSize != 0 && o.maxSize < o.size {
				return usageError(fmt.Errorf("--max-size %s is below --size %s", o.maxSize.String(), o.size.String()))
			}
			return nil
		},
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runGrow(cmd.OutOrStdout(), args[0], o)
		}),
	}
	cmd.Flags().Var(&o.size, "size", "size to grow the pool to, such as 256M or 2G (required)")
	cmd.Flags().Var(&o.maxSize, "max-size", "new maximum size of the pool, recorded in it (default: keep the recorded one)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the pool's lock")
	o.key.add(cmd)
	return cmd
}

func runGrow(out io.Writer, path string, o growOptions) error {
	key, err := o.key.load()
	if err != nil {
		return err
	}
	h, err := heap.Open(path, &heap.Options{MaxSize: int64(o.maxSize), Timeout: o.timeout, Key: key})
	if err != nil {
		return err
	}
	before := h.Stats()
	if uint64(o.size) > before.MaxSize {
		return errors.Join(usageError(fmt.Errorf("%s: --size %s (%d bytes) is beyond the pool's maximum size of %s (%d bytes): raise it with --max-size",
			path, o.size.String(), uint64(o.size), humanBytes(before.MaxSize), before.MaxSize)), h.Close())
	}
	err = h.Grow(int64(o.size))
	if cerr := h.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	h, err = heap.Open(path, &heap.Options{ReadOnly: true, Timeout: o.timeout, Key: key})
	if err != nil {
		return err
	}
	st := h.Stats()
	if err := h.Close(); err != nil {
		return err
	}
	if st.Size == before.Size {
		fmt.Fprintf(out, "%s: %s already (%d bytes), at most %s\n", path, humanBytes(st.Size), st.Size, humanBytes(st.MaxSize))
		return nil
	}
	fmt.Fprintf(out, "grew %s from %s to %s (%d bytes, %d slabs), at most %s\n", path,
		humanBytes(before.Size), humanBytes(st.Size), st.Size, st.SlabsTotal, humanBytes(st.MaxSize))
	return nil
}
