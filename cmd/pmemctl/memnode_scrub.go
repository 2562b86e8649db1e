package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/remote"
)

func newMemnodeScrubCmd() *cobra.Command {
	var o serverOptions
	cmd := &cobra.Command{
		Use:   "scrub (--addr ADDR | --dir DIR)",
		Short: "Verify the region files a memory node keeps",
		Long: `Scrub checks every page of every region a memory node keeps against the
checksum the node keeps beside it, as the node does at start, and lists each
problem found: a region set aside at start (a file of a bad size, a damaged
checksum file), a writer file that does not check, a page whose bytes do not
match its checksum (region and offset). It needs no pool key: a sealed
region's records are checked as the node stores them. With --addr the
running node at ADDR checks its regions while it serves them, asked over
mutual TLS (--tls-ca, --tls-cert, --tls-key) or plain TCP with --insecure;
with --dir the directory of a stopped node is checked, without changing
anything. A client whose backup holds a damaged page repairs the node's copy
when it reads it. The exit status is 2 when there is any problem.`,
		Args:    cobra.NoArgs,
		PreRunE: o.check,
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runMemnodeScrub(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	cmd.Flags().StringVar(&o.addr, "addr", "", "address of a running memory node")
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory of a stopped memory node")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	o.tls.register(cmd.Flags())
	return cmd
}

func runMemnodeScrub(ctx context.Context, out, errOut io.Writer, o serverOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	problems := []remote.Problem{}
	var err error
	if o.addr != "" {
		err = o.query(ctx, errOut, func(ctx context.Context, cfg *tls.Config) (err error) {
			problems, err = remote.ScrubNode(ctx, o.addr, cfg)
			return err
		})
	} else {
		err = remote.ScrubDir(o.dir, func(p remote.Problem) {
			problems = append(problems, p)
			if !o.json {
				fmt.Fprintln(out, p)
			}
		})
	}
	if err != nil {
		return err
	}
	switch {
	case o.json:
		if err := writeJSON(out, problems); err != nil {
			return err
		}
	case o.addr != "":
		for _, p := range problems {
			fmt.Fprintln(out, p)
		}
	}
	if len(problems) > 0 {
		return problemsError(fmt.Errorf("%d problems found", len(problems)))
	}
	if !o.json {
		fmt.Fprintln(out, "no problems found")
	}
	return nil
}
