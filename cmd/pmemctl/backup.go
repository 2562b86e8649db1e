package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/recovery"
)

func newBackupCmd() *cobra.Command {
	var (
		jsonOut bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backup POOL NEW",
		Short: "Write a consistent copy of a pool that no process has open for writing",
		Long: `Backup opens POOL read-only (a shared lock: it waits for a process that has
the pool open for writing, at most --timeout) and writes the state of its
last commit to NEW, which must not exist, as a cleanly closed pool: if POOL
needs recovery, the copy is the recovered state, and POOL is never written.
NEW is written to a temporary file, synced and renamed into place, so a
crash leaves NEW whole or absent. It then checks NEW.

A program that has the pool open makes the same copy while it keeps
committing with heap.Heap.Backup.

Exit status: 0 when NEW checks clean, 2 when it has problems, 3 when POOL
cannot be opened or NEW cannot be written, 1 when NEW exists.`,
		Args: cobra.ExactArgs(2),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runBackup(cmd, args[0], args[1], timeout, jsonOut)
		}),
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for a writer to release the pool")
	return cmd
}

type backupResult struct {
	Pool    string       `json:"pool"`
	Output  string       `json:"output"`
	Bytes   int64        `json:"bytes"`
	Seconds float64      `json:"seconds"`
	Check   *checkResult `json:"check"`
}

func runBackup(cmd *cobra.Command, src, dst string, timeout time.Duration, jsonOut bool) error {
	if err := refuseExisting(dst); err != nil {
		return err
	}
	h, err := heap.Open(src, &heap.Options{ReadOnly: true, Timeout: timeout, FullValidation: true})
	if err != nil {
		return err
	}
	t0 := time.Now()
	err = h.Backup(dst)
	elapsed := time.Since(t0)
	if cerr := h.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return err
	}
	r := &backupResult{Pool: src, Output: dst, Seconds: elapsed.Seconds()}
	if fi, err := os.Stat(dst); err == nil {
		r.Bytes = fi.Size()
	}
	out := cmd.OutOrStdout()
	var show func(recovery.Problem)
	if !jsonOut {
		fmt.Fprintf(out, "backed up %s to %s: %s in %s\n", src, dst, humanBytes(uint64(r.Bytes)), elapsed.Round(time.Microsecond))
		show = func(p recovery.Problem) { fmt.Fprintln(out, p) }
	}
	if r.Check, err = checkPool(cmd, dst, false, jsonOut, show); err != nil {
		return err
	}
	if jsonOut {
		err = writeJSON(out, r)
	} else {
		r.Check.summary(out)
	}
	return errors.Join(err, r.Check.err())
}
