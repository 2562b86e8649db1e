package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/internal/layout"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of pmemctl, Go and the pool format",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			printVersion(cmd.OutOrStdout())
		},
	}
}

func printVersion(out io.Writer) {
	module, version := "github.com/pmemgo/pmemgo", "unknown"
	var revision string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path != "" {
			module = bi.Main.Path
		}
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		revision = vcsRevision(bi)
	}
	fmt.Fprintf(out, "pmemctl %s %s%s\n", module, version, revision)
	fmt.Fprintf(out, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(out, "pool format version %d\n", layout.Version)
}

// vcsRevision returns " (revision[, modified])" when the build recorded
// the commit it was built from.
func vcsRevision(bi *debug.BuildInfo) string {
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return fmt.Sprintf(" (%.12s%s)", rev, modified)
}
