package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

type copyOptions struct {
	output string
	json   bool
}

func (o *copyOptions) flags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "the new pool file to write (required; must not exist)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
}

func (o *copyOptions) check(*cobra.Command, []string) error {
	if o.output == "" {
		return usageError(errors.New("--output is required"))
	}
	return nil
}

func newRecoverCmd() *cobra.Command {
	var o copyOptions
	cmd := &cobra.Command{
		Use:   "recover POOL --output NEW",
		Short: "Recover a copy of a pool that a crash left needing recovery",
		Long: `Recover never works in place: it copies POOL to NEW, which must not exist,
and opens the copy as an application would, which recovers it: a live undo
log is rolled back (or, when its commit record shows the transaction reached
the media whole, kept), an interrupted swizzle is finished, a header slot
torn by the crash is rewritten. It prints what recovery did, then checks
NEW. POOL is only read.

Exit status: 0 when NEW checks clean, 2 when it still has problems (damage
that recovery does not repair), 3 when POOL cannot be read or recovered, in
which case NEW is removed; 1 when NEW exists.`,
		Args:    cobra.ExactArgs(1),
		PreRunE: o.check,
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runRecover(cmd, args[0], o)
		}),
	}
	o.flags(cmd)
	return cmd
}

type recoverResult struct {
	Pool          string `json:"pool"`
	Output        string `json:"output"`
	CopiedBytes   int64  `json:"copied_bytes"`
	ClosedCleanly bool   `json:"closed_cleanly"`
	// TornSlots lists the header slots that did not hold, which Open
	// rewrote.
	TornSlots []string `json:"torn_header_slots"`
	// RolledBack counts the undo-log entries rolled back; KeptCommitted
	// is set when the log held a transaction that had committed, which
	// was kept.
	RolledBack    int  `json:"rolled_back"`
	KeptCommitted bool `json:"kept_committed_transaction"`
	// Relocated is set when the pool was mapped at a new base, Resumed
	// when that finished a swizzle a crash interrupted.
	Relocated         bool         `json:"relocated"`
	Resumed           bool         `json:"resumed_swizzle"`
	PointersRewritten int64        `json:"pointers_rewritten"`
	SlabsRewritten    int          `json:"slabs_rewritten"`
	Check             *checkResult `json:"check"`
}

func runRecover(cmd *cobra.Command, src string, o copyOptions) error {
	if err := refuseExisting(o.output); err != nil {
		return err
	}
	info, err := recovery.Inspect(src)
	if err != nil {
		return err
	}
	if info.Current < 0 {
		return fmt.Errorf("%s: neither header slot holds, so there is no pool to recover: slot A: %v; slot B: %w",
			src, info.Slots[0].Err, info.Slots[1].Err)
	}
	r := &recoverResult{Pool: src, Output: o.output, ClosedCleanly: !info.OpenMark, TornSlots: []string{}}
	for i, s := range info.Slots {
		if s.Err != nil {
			r.TornSlots = append(r.TornSlots, string(rune('A'+i)))
		}
	}
	if r.CopiedBytes, err = copyPool(cmd, o.json, src, o.output); err != nil {
		return err
	}
	rep, err := openAndClose(o.output)
	if err != nil {
		return err
	}
	r.RolledBack, r.KeptCommitted = rep.RolledBack, rep.RolledBack == 0 && info.Log.Commit && info.Log.Holds
	r.Relocated, r.Resumed = rep.Relocated, rep.Resumed
	r.PointersRewritten, r.SlabsRewritten = rep.Swizzle.Pointers, rep.Swizzle.Slabs
	return r.finish(cmd, o.json)
}

// openAndClose opens the pool at path, which recovers it, and closes it.
// When that fails the file, a copy made for recovery, is removed.
func openAndClose(path string) (recovery.Report, error) {
	h, err := heap.Open(path, &heap.Options{FullValidation: true})
	if err != nil {
		os.Remove(path)
		return recovery.Report{}, fmt.Errorf("%w (%s removed)", err, path)
	}
	rep := h.Recovery()
	return rep, h.Close()
}

// finish checks the output and prints the result.
func (r *recoverResult) finish(cmd *cobra.Command, jsonOut bool) error {
	out := cmd.OutOrStdout()
	if !jsonOut {
		r.print(out)
	}
	var show func(recovery.Problem)
	if !jsonOut {
		show = func(p recovery.Problem) { fmt.Fprintln(out, p) }
	}
	var err error
	if r.Check, err = checkPool(cmd, r.Output, false, jsonOut, show); err != nil {
		return err
	}
	if jsonOut {
		err = writeJSON(out, r)
	} else {
		r.Check.summary(out)
	}
	return errors.Join(err, r.Check.err())
}

func (r *recoverResult) print(out io.Writer) {
	fmt.Fprintf(out, "recovered %s into %s, a copy of %s:\n", r.Pool, r.Output, humanBytes(uint64(r.CopiedBytes)))
	tw := newTable(out)
	shutdown := "closed cleanly"
	if !r.ClosedCleanly {
		shutdown = "not closed cleanly"
	}
	fmt.Fprintf(tw, "  shutdown\t%s\n", shutdown)
	for _, s := range r.TornSlots {
		fmt.Fprintf(tw, "  header\tslot %s did not hold (a write torn by the crash) and was rewritten\n", s)
	}
	undo := "nothing to roll back"
	switch {
	case r.RolledBack > 0:
		undo = fmt.Sprintf("rolled back %s of an interrupted transaction", plural(r.RolledBack, "entry"))
	case r.KeptCommitted:
		undo = "kept a transaction that had committed, and retired its log"
	}
	fmt.Fprintf(tw, "  undo log\t%s\n", undo)
	swz := "none needed"
	switch {
	case r.Resumed:
		swz = fmt.Sprintf("finished a relocation that a crash interrupted: %s in %s rewritten",
			plural(r.PointersRewritten, "pointer"), plural(r.SlabsRewritten, "slab"))
	case r.Relocated:
		swz = fmt.Sprintf("mapped at a new base: %s in %s rewritten", plural(r.PointersRewritten, "pointer"), plural(r.SlabsRewritten, "slab"))
	}
	fmt.Fprintf(tw, "  swizzle\t%s\n", swz)
	tw.Flush()
}
