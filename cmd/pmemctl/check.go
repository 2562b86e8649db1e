package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/recovery"
)

type checkOptions struct {
	json, leaks bool
	key         keyFlag
}

func newCheckCmd() *cobra.Command {
	var o checkOptions
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "check POOL",
		Short: "Check a pool offline and print every problem found",
		Long: `Check reads the pool file without writing it and prints each problem on a
line of its own, then a summary line. A pool that a crash left needing
recovery (a live undo log, an interrupted swizzle) is checked as Open would
leave it after recovering, and the recovery is reported as a problem.

With --leaks it also walks the object graph from the root, through the
pointer maps the pool stores for every type, and reports each allocated
object or array that nothing reachable from the root points to: garbage
that no transaction can free any more (pmemctl gc frees it in a copy). The
walk runs only on a pool without damage, since objects that only a damaged
pointer leads to would show as leaks.

A sealed (encrypted) pool is checked with its key (--key-file): every
record must authenticate (a record that does not is reported at its file
offset), then the pool inside is checked as above, at pool offsets, in
memory. Without the key only the sealed file's structure can be checked
(its header, its size, the form of every record), and check says so. The
leak walk needs a plain pool.

Exit status: 0 when the pool is clean, 2 when problems were found, 3 when the
file is not a pool or cannot be read.`,
		Args: cobra.ExactArgs(1),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var show func(recovery.Problem)
			if !o.json {
				show = func(p recovery.Problem) { fmt.Fprintln(out, p) }
			}
			path, done, err := rf.local(cmd, args[0])
			if err != nil {
				return err
			}
			defer done()
			r, err := checkPoolWith(cmd, path, o, show)
			if err != nil {
				return err
			}
			r.Pool = args[0]
			if o.json {
				if err := writeJSON(out, r); err != nil {
					return err
				}
			} else {
				r.summary(out)
			}
			return r.err()
		}),
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
	cmd.Flags().BoolVar(&o.leaks, "leaks", false, "also report allocated objects unreachable from the root")
	rf.register(cmd)
	o.key.add(cmd)
	return cmd
}

// checkResult is what a check found, as --json prints it.
type checkResult struct {
	Pool     string        `json:"pool"`
	Problems []problemJSON `json:"problems"`
	// Slabs, Objects and Pointers say how much was checked: slabs with
	// usable headers, allocated slots (objects and arrays) in them, and
	// their non-nil pointer words.
	Slabs      int   `json:"slabs"`
	Objects    int64 `json:"objects"`
	Pointers   int64 `json:"pointers"`
	RolledBack int   `json:"rolled_back"`
	// Leaks is set with --leaks.
	Leaks *leakResult `json:"leaks,omitempty"`
	// Sealed is set for a sealed pool: "contents", checked with the key,
	// or "structure", without it.
	Sealed string `json:"sealed,omitempty"`

	// damaged counts the problems that are damage, not pending recovery.
	damaged int
}

type problemJSON struct {
	Kind string `json:"kind"`
	// Offset is the file offset, -1 when the problem has none.
	Offset        int64  `json:"offset"`
	Where         string `json:"where"`
	Error         string `json:"error"`
	NeedsRecovery bool   `json:"needs_recovery"`
}

type leakResult struct {
	// Skipped says why the walk did not run; the counts are then zero.
	Skipped          string `json:"skipped,omitempty"`
	Allocated        int64  `json:"allocated"`
	Reachable        int64  `json:"reachable"`
	Unreachable      int64  `json:"unreachable"`
	UnreachableBytes uint64 `json:"unreachable_bytes"`
}

// checkPool checks the pool at path, and walks it for leaks when leaks is
// set, calling show (if not nil) with each problem as it is found. It
// returns an error only when the pool cannot be checked at all.
func checkPool(cmd *cobra.Command, path string, leaks, jsonOut bool, show func(recovery.Problem)) (*checkResult, error) {
	return checkPoolWith(cmd, path, checkOptions{leaks: leaks, json: jsonOut}, show)
}

// checkPoolWith is checkPool with every option of check: a sealed pool is
// checked with the key of o.key, or its structure only without one.
func checkPoolWith(cmd *cobra.Command, path string, o checkOptions, show func(recovery.Problem)) (*checkResult, error) {
	leaks, jsonOut := o.leaks, o.json
	r := &checkResult{Pool: path, Problems: []problemJSON{}}
	sealed, err := recovery.IsSealedFile(path)
	if err != nil {
		return nil, err
	}
	key, err := o.key.load()
	if err != nil {
		return nil, err
	}
	if key != nil && !sealed {
		return nil, fmt.Errorf("%s is not a sealed pool, but --key-file was given: %w", path, pmemgo.ErrBadKey)
	}
	// The checker says how many slabs it goes through once it has read
	// their headers; the bar spins until then.
	bar := newProgress(cmd, jsonOut, countItems, totalLater, "checking slabs")
	add := func(p recovery.Problem) bool {
		pending := errors.Is(p.Err, recovery.ErrNeedsRecovery)
		if !pending {
			r.damaged++
		}
		r.Problems = append(r.Problems, problemJSON{Kind: p.Kind, Offset: p.Offset, Where: p.Where, Error: p.Err.Error(), NeedsRecovery: pending})
		if show != nil {
			bar.above(func() { show(p) })
		}
		return true
	}
	opts := &recovery.CheckOptions{Progress: bar.checkProgress()}
	var st recovery.CheckStats
	switch {
	case !sealed:
		st, err = recovery.CheckFileOptions(path, opts, add)
	case key == nil:
		r.Sealed = "structure"
		st, err = recovery.CheckSealedFile(path, nil, opts, add)
	default:
		r.Sealed = "contents"
		st, err = recovery.CheckSealedFile(path, key, opts, add)
	}
	bar.done()
	if err != nil {
		return nil, err
	}
	r.Slabs, r.Objects, r.Pointers, r.RolledBack = st.Slabs, st.Objects, st.Pointers, st.RolledBack
	if !leaks {
		return r, nil
	}
	r.Leaks = &leakResult{}
	if sealed {
		r.Leaks.Skipped = "the leak walk reads plain pools only"
		return r, nil
	}
	if r.damaged > 0 {
		r.Leaks.Skipped = "the pool is damaged, and objects that only a damaged pointer leads to would show as leaks"
		return r, nil
	}
	bar = newProgress(cmd, jsonOut, countItems, st.Objects, "walking")
	rs, err := recovery.CheckLeaks(path, bar.walkProgress(), add)
	bar.done()
	if err != nil {
		return nil, err
	}
	r.Leaks.Allocated, r.Leaks.Reachable = rs.Allocated, rs.Reached
	r.Leaks.Unreachable, r.Leaks.UnreachableBytes = rs.Unreached()
	return r, nil
}

// summary prints the summary lines: what was checked and found, and what
// the leak walk found.
func (r *checkResult) summary(out io.Writer) {
	summary := plural(len(r.Problems), "problem")
	if pending := len(r.Problems) - r.damaged; pending > 0 {
		summary += fmt.Sprintf(" (%d of them recovery that opening the pool does)", pending)
	}
	if r.Sealed == "structure" {
		fmt.Fprintf(out, "%s: %s in the sealed file's structure; its contents cannot be checked without the key (--key-file)\n", r.Pool, summary)
	} else {
		fmt.Fprintf(out, "%s: %s, %s and %s in %s checked\n", r.Pool, summary,
			plural(r.Objects, "object"), plural(r.Pointers, "pointer"), plural(r.Slabs, "slab"))
	}
	switch l := r.Leaks; {
	case l == nil:
	case l.Skipped != "":
		fmt.Fprintf(out, "%s: leaks not checked: %s\n", r.Pool, l.Skipped)
	default:
		fmt.Fprintf(out, "%s: %d of %s reachable from the root, %d unreachable (%s)\n",
			r.Pool, l.Reachable, plural(l.Allocated, "object"), l.Unreachable, humanBytes(l.UnreachableBytes))
	}
}

// err returns the error that ends check with exit status 2 when problems
// were found.
func (r *checkResult) err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	return problemsError(fmt.Errorf("%s: %s found", r.Pool, plural(len(r.Problems), "problem")))
}
