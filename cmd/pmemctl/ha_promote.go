package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
)

type haPromoteOptions struct {
	coord coordFlags
	tls   tlsFlags
	key   keyFlag
	wait  time.Duration
}

func newHAPromoteCmd() *cobra.Command {
	var o haPromoteOptions
	cmd := &cobra.Command{
		Use:   "promote POOL --name NAME (--coord-dir DIR | --etcd EP)",
		Short: "Register a pool copied by hand as its newest incarnation, fencing every older copy",
		Long: `Promote makes POOL, a copy of a pool brought up by hand (a replica's file,
a backup), the pool's newest incarnation: it takes the role from the
coordinator (waiting up to --wait), refuses a copy older than the
incarnation registered, gives the copy the new token as its epoch and
registers it, then resigns. From then on the old primary, and any other
older copy, is refused whenever it returns. Start the application on POOL
afterwards: ha.StartPrimary takes the next token.`,
		Args: cobra.ExactArgs(1),
		PreRunE: func(*cobra.Command, []string) error {
			return o.coord.check()
		},
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runHAPromote(cmd.Context(), cmd.OutOrStdout(), o, args[0])
		}),
	}
	cmd.Flags().DurationVar(&o.wait, "wait", 10*time.Second, "how long to wait for the role")
	o.coord.register(cmd.Flags())
	o.tls.register(cmd.Flags())
	o.key.add(cmd)
	return cmd
}

func runHAPromote(ctx context.Context, out io.Writer, o haPromoteOptions, path string) error {
	ctx, cancel := context.WithTimeout(defaultContext(ctx), o.wait)
	defer cancel()
	coord, closeCoord, err := o.coord.open(&o.tls)
	if err != nil {
		return err
	}
	defer closeCoord()
	key, err := o.key.load()
	if err != nil {
		return err
	}
	h, err := heap.Open(path, &heap.Options{Key: key})
	if err != nil {
		return err
	}
	defer h.Close()
	term, err := ha.Promote(ctx, h, coord, o.coord.name, o.coord.node)
	if err != nil {
		return err
	}
	if err := term.Resign(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: incarnation %d of pool %s registered\n", path, term.Token, o.coord.name)
	return nil
}
