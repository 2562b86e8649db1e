package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/recovery"
)

func newCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check POOL",
		Short: "Check a pool offline and print every problem found",
		Long: `Check reads the pool file without writing it and prints each problem on a
line of its own, then a summary line. A pool that a crash left needing
recovery (a live undo log, an interrupted swizzle) is checked as Open would
leave it after recovering, and the recovery is reported as a problem.

Exit status: 0 when the pool is clean, 2 when problems were found, 3 when the
file is not a pool or cannot be read.`,
		Args: cobra.ExactArgs(1),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd.OutOrStdout(), args[0])
		}),
	}
}

func runCheck(out io.Writer, path string) error {
	var problems, recoverable int
	st, err := recovery.CheckFileStats(path, func(p recovery.Problem) bool {
		problems++
		if errors.Is(p.Err, recovery.ErrNeedsRecovery) {
			recoverable++
		}
		fmt.Fprintln(out, p)
		return true
	})
	if err != nil {
		return err
	}
	summary := plural(problems, "problem")
	if recoverable > 0 {
		summary += fmt.Sprintf(" (%d of them recovery that opening the pool does)", recoverable)
	}
	fmt.Fprintf(out, "%s: %s, %s and %s in %s checked\n", path, summary,
		plural(int(st.Objects), "object"), plural(int(st.Pointers), "pointer"), plural(st.Slabs, "slab"))
	if problems > 0 {
		return problemsError(fmt.Errorf("%s: %s found", path, plural(problems, "problem")))
	}
	return nil
}

// plural returns "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
