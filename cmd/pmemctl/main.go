// Command pmemctl inspects, checks and repairs pmemgo pools.
//
//	pmemctl create POOL --size SIZE [--slab-size SIZE] [--log-size SIZE]
//	pmemctl info POOL [--json]
//	pmemctl types POOL [--json]
//	pmemctl stats POOL [--json]
//	pmemctl check POOL [--leaks] [--json]
//	pmemctl dump POOL [--type T] [--object ID] [--hex]
//	pmemctl recover POOL --output NEW [--json]
//	pmemctl gc POOL --output NEW [--json]
//	pmemctl replica serve|status ...
//	pmemctl ha standby|guard|power-lost|switchover|status|promote ...
//	pmemctl memnode serve|status ...
//	pmemctl cert ca|issue ...
//	pmemctl key new FILE
//	pmemctl key rotate POOL --key-file CUR --new-key-file NEW [--old-key-file OLD]
//	pmemctl demo [--dir DIR] [--nodes N] [--keep]
//	pmemctl version
//	pmemctl bench [--workload NAME] [--engine NAME] [--keys N] [--ops N] [--warm] [--json] [--plot FILE.svg] [--dir DIR]
//
// Commands that read a pool never write it: they recover it, if it needs
// it, in memory only. recover and gc write a new file, never over one.
// Progress bars are drawn on standard error, only when standard output is
// a terminal and the output is not JSON.
//
// Exit codes: 0 success, 1 usage error, 2 problems found (a pool that fails
// its check, a demo that fails verification), 3 not a pool or an I/O error.
//
// The demo reopens its pool in a child process: it runs its own executable
// again with the hidden demo-verify command. Under `go test` that executable
// is the test binary, whose TestMain runs the root command instead of the
// tests when PMEMCTL_CHILD=1 is set; the demo sets it for the child.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/remote"
)

// childEnv is set in the environment of the demo's child process, so that a
// test binary standing in for pmemctl knows to run the command line rather
// than its tests.
const childEnv = "PMEMCTL_CHILD"

func main() {
	// A remote pool's fault agent is this program started again.
	remote.AgentMain()
	os.Exit(run(newRootCmd(), os.Args[1:]))
}

// newRootCmd builds the command tree. Each call returns a fresh tree, so
// tests can run commands with their own arguments and output buffers.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "pmemctl",
		Short: "Inspect, check and repair pmemgo persistent-memory pools",
		// run prints errors itself, with the exit code chosen from them;
		// usage is printed only for usage errors.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError(err)
	})
	root.AddCommand(
		newCreateCmd(),
		newGrowCmd(),
		newInfoCmd(),
		newTypesCmd(),
		newStatsCmd(),
		newCheckCmd(),
		newDumpCmd(),
		newRecoverCmd(),
		newBackupCmd(),
		newGCCmd(),
		newReplicaCmd(),
		newMemnodeCmd(),
		newCertCmd(),
		newKeyCmd(),
		newDemoCmd(),
		newDemoVerifyCmd(),
		newVersionCmd(),
		newBenchCmd(),
		newHACmd(),
	)
	return root
}

// run executes root with args, prints any error to root's error stream and
// returns the process exit code.
func run(root *cobra.Command, args []string) int {
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	root.PrintErrln("pmemctl:", err)
	if code == exitUsage {
		root.PrintErrln("Run 'pmemctl --help' for usage.")
	}
	return code
}
