package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/bench"
)

func newBenchCmd() *cobra.Command {
	var cfg bench.Config
	var asJSON bool
	var plotPath string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare pmemgo's persistent maps with bbolt, pebble and Go's memory",
		Long: `bench fills every engine with the same keys (16 bytes, values of 100) in
one directory, then runs each workload on each, interleaved, every write
durable when it returns. It prints ops/s and p50/p99 latency per workload
and engine, and what each filled store costs: bytes on disk per key, the
time to reopen it and answer a Get, and the resident memory it took.

Workloads: ` + workloadList() + `
Engines: ` + strings.Join(bench.Engines(), ", "),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Keys <= 0 {
				return usageError(fmt.Errorf("--keys %d: must be positive", cfg.Keys))
			}
			if err := checkNames("--workload", cfg.Workloads, workloadNames()); err != nil {
				return err
			}
			if err := checkNames("--engine", cfg.Engines, bench.Engines()); err != nil {
				return err
			}
			// An interrupted run removes its stores before it exits: by
			// default they are in /dev/shm, memory until the next boot.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Context = ctx
			rep, err := bench.Run(cfg)
			if err != nil {
				return err
			}
			if plotPath != "" {
				if err := rep.WritePlot(plotPath); err != nil {
					return fmt.Errorf("plot %s: %w", plotPath, err)
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			return rep.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Keys, "keys", 100000, "keys to fill each store with")
	f.IntVar(&cfg.Ops, "ops", 0, "operations per workload and engine (default: as many as keys)")
	f.StringSliceVar(&cfg.Workloads, "workload", nil, "workloads to run, by name (default: all)")
	f.StringSliceVar(&cfg.Engines, "engine", nil, "engines to compare, by name (default: all)")
	f.StringVar(&cfg.Dir, "dir", "", "directory for the stores (default: /dev/shm when it exists)")
	f.IntVar(&cfg.Rounds, "rounds", 0, "slices each workload is cut into, the engines taking turns (default 10)")
	f.BoolVar(&cfg.Warm, "warm", false, "read every key of each reopened store once, untimed, before the workloads")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&plotPath, "plot", "", "also draw ops/s per workload and engine into this file (.svg, .png or .pdf)")
	return cmd
}

func workloadNames() []string {
	var names []string
	for _, w := range bench.Workloads() {
		names = append(names, w[0])
	}
	return names
}

func workloadList() string { return strings.Join(workloadNames(), ", ") }

// checkNames refuses a name that is not in known, as a usage error.
func checkNames(flag string, names, known []string) error {
	for _, n := range names {
		found := false
		for _, k := range known {
			found = found || n == k
		}
		if !found {
			return usageError(fmt.Errorf("%s %q: not one of %s", flag, n, strings.Join(known, ", ")))
		}
	}
	return nil
}
