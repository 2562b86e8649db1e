package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

func newGCCmd() *cobra.Command {
	var o copyOptions
	cmd := &cobra.Command{
		Use:   "gc POOL --output NEW",
		Short: "Free, in a copy of a pool, every object unreachable from the root",
		Long: `Gc never works in place: it copies POOL to NEW, which must not exist, opens
the copy (which recovers it if a crash left it needing recovery), walks the
object graph from the root through the pointer maps the pool stores, and
frees every allocated object and array the walk did not reach, all in one
transaction. It prints the objects and bytes reclaimed, by type, then
checks NEW, leaks included. POOL is only read.

Gc first checks POOL and refuses a pool with damage, since it follows the
pointers it finds and would free what only a damaged pointer leads to. A
pool that only needs recovery is fine: it is recovered in the copy.

Exit status: 0 when NEW checks clean; 2 when POOL has damage (NEW is not
written) or NEW has problems; 3 when POOL cannot be read or collected, in
which case NEW is removed; 1 when NEW exists.`,
		Args:    cobra.ExactArgs(1),
		PreRunE: o.check,
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runGC(cmd, args[0], o)
		}),
	}
	o.flags(cmd)
	return cmd
}

type gcResult struct {
	Pool        string `json:"pool"`
	Output      string `json:"output"`
	CopiedBytes int64  `json:"copied_bytes"`
	// RolledBack and Relocated say what opening the copy recovered.
	RolledBack int  `json:"rolled_back"`
	Relocated  bool `json:"relocated"`
	// Allocated and Reachable count objects (allocated slots) before the
	// collection; Freed and FreedBytes what it freed, by type in Types.
	Allocated  int64    `json:"allocated"`
	Reachable  int64    `json:"reachable"`
	Freed      int64    `json:"freed"`
	FreedBytes uint64   `json:"freed_bytes"`
	SlabsFreed int      `json:"slabs_freed"`
	Types      []gcType `json:"types"`
	// Refused says why gc refused to collect POOL; Check is then the check
	// of POOL, otherwise that of NEW.
	Refused string       `json:"refused,omitempty"`
	Check   *checkResult `json:"check"`
}

type gcType struct {
	Type    string `json:"type"`
	Kind    string `json:"kind"`
	Objects int64  `json:"objects"`
	Bytes   uint64 `json:"bytes"`
}

func runGC(cmd *cobra.Command, src string, o copyOptions) (err error) {
	if err := refuseExisting(o.output); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	var show, showDamage func(recovery.Problem)
	if !o.json {
		show = func(p recovery.Problem) { fmt.Fprintln(out, p) }
		showDamage = func(p recovery.Problem) {
			if !errors.Is(p.Err, recovery.ErrNeedsRecovery) {
				show(p)
			}
		}
	}
	// The walk trusts the pointers it follows: on a damaged pool it would
	// free what only a damaged pointer leads to. Recovery is another
	// matter: opening the copy does it.
	r := &gcResult{Pool: src, Output: o.output, Types: []gcType{}}
	if r.Check, err = checkPool(cmd, src, false, o.json, showDamage); err != nil {
		return err
	}
	if r.Check.damaged > 0 {
		err := problemsError(fmt.Errorf("%s: %s found, so gc would free what only a damaged pointer leads to",
			src, plural(r.Check.damaged, "problem")))
		if o.json {
			r.Refused = err.Error()
			err = errors.Join(err, writeJSON(out, r))
		}
		return err
	}
	if r.CopiedBytes, err = copyPool(cmd, o.json, src, o.output); err != nil {
		return err
	}
	if err := r.collect(cmd, o); err != nil {
		os.Remove(o.output)
		return fmt.Errorf("%w (%s removed)", err, o.output)
	}
	if !o.json {
		r.print(out)
	}
	if r.Check, err = checkPool(cmd, o.output, true, o.json, show); err != nil {
		return err
	}
	if o.json {
		err = writeJSON(out, r)
	} else {
		r.Check.summary(out)
	}
	return errors.Join(err, r.Check.err())
}

// collect opens the copy and frees, in one transaction, what the root
// does not reach.
func (r *gcResult) collect(cmd *cobra.Command, o copyOptions) (err error) {
	h, err := heap.Open(o.output, &heap.Options{FullValidation: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, h.Close()) }()
	rep := h.Recovery()
	r.RolledBack, r.Relocated = rep.RolledBack, rep.Relocated
	st := h.Stats()
	before, allocated := st.SlabsUsed, 0
	for _, t := range st.Types {
		allocated += t.Objects
	}
	byType := map[gcType]*gcType{}
	err = h.Update(func(tx *heap.Tx) error {
		bar := newProgress(cmd, o.json, countItems, int64(allocated), "walking")
		reach, err := tx.Reach(bar.walkProgress())
		bar.done()
		if err != nil {
			return err
		}
		r.Allocated, r.Reachable = reach.Allocated, reach.Reached
		n, _ := reach.Unreached()
		bar = newProgress(cmd, o.json, countItems, n, "freeing")
		defer bar.done()
		for s := range reach.Unreachable() {
			if err := tx.FreeOffset(s.Off); err != nil {
				return err
			}
			bar.add(1)
			key := gcType{Type: s.Type.Name, Kind: kindName(s.Kind)}
			t := byType[key]
			if t == nil {
				t = &key
				byType[key] = t
			}
			t.Objects++
			t.Bytes += uint64(s.Size)
			r.Freed++
			r.FreedBytes += uint64(s.Size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.SlabsFreed = before - h.Stats().SlabsUsed
	for _, t := range byType {
		r.Types = append(r.Types, *t)
	}
	slices.SortFunc(r.Types, func(a, b gcType) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Kind, b.Kind))
	})
	return nil
}

func (r *gcResult) print(out io.Writer) {
	fmt.Fprintf(out, "collected %s into %s, a copy of %s:\n", r.Pool, r.Output, humanBytes(uint64(r.CopiedBytes)))
	tw := newTable(out)
	if r.RolledBack > 0 || r.Relocated {
		fmt.Fprintf(tw, "  recovery\t%s rolled back, relocated: %t\n", plural(r.RolledBack, "undo-log entry"), r.Relocated)
	}
	fmt.Fprintf(tw, "  reachable\t%d of %s from the root\n", r.Reachable, plural(r.Allocated, "object"))
	fmt.Fprintf(tw, "  freed\t%s, %s, in one transaction; %s emptied\n", plural(r.Freed, "object"), humanBytes(r.FreedBytes), plural(r.SlabsFreed, "slab"))
	for _, t := range r.Types {
		fmt.Fprintf(tw, "  \t%d of %s (%s), %s\n", t.Objects, t.Type, t.Kind, humanBytes(t.Bytes))
	}
	tw.Flush()
}
