package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/mirror"
)

type scrubOptions = serverOptions

func newReplicaScrubCmd() *cobra.Command {
	var o scrubOptions
	cmd := &cobra.Command{
		Use:   "scrub (--addr ADDR | --dir DIR)",
		Short: "Verify the pool files a replica server keeps",
		Long: `Scrub verifies each pool file a replica server keeps, as the server does at
start: a valid header of the pool, and no problem found by the checker. With
--addr the running server at ADDR verifies the pools no primary is using;
one that fails is sent a whole copy by its next primary; the server is
asked over mutual TLS (--tls-ca, --tls-cert, --tls-key, with an identity
allowed to read the status), or over plain TCP with --insecure. With --dir the
directory of a stopped server is verified, without changing anything.
The exit status is 2 when a pool fails.`,
		Args:    cobra.NoArgs,
		PreRunE: o.check,
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runScrub(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	o.register(cmd)
	return cmd
}

func runScrub(ctx context.Context, out, errOut io.Writer, o scrubOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var res []mirror.ScrubResult
	var err error
	if o.addr != "" {
		err = o.query(ctx, errOut, func(ctx context.Context, cfg *tls.Config) (err error) {
			res, err = mirror.QueryScrub(ctx, o.addr, cfg)
			return err
		})
	} else {
		res, err = mirror.ScrubDir(o.dir)
	}
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range res {
		if !r.OK && !r.Skipped {
			failed++
		}
	}
	if o.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		for _, r := range res {
			switch {
			case r.OK:
				fmt.Fprintf(out, "%s ok\n", r.Pool)
			case r.Skipped:
				fmt.Fprintf(out, "%s skipped %s\n", r.Pool, strings.Join(r.Problems, "; "))
			default:
				fmt.Fprintf(out, "%s FAILED\n", r.Pool)
				for _, p := range r.Problems {
					fmt.Fprintf(out, "  %s\n", p)
				}
			}
		}
		fmt.Fprintf(out, "%d pools, %d failed\n", len(res), failed)
	}
	if failed > 0 {
		return problemsError(fmt.Errorf("%d of %d pools failed verification", failed, len(res)))
	}
	return nil
}

type resetFencingOptions struct {
	dir, pool string
	epoch     uint64
}

func newReplicaResetFencingCmd() *cobra.Command {
	var o resetFencingOptions
	cmd := &cobra.Command{
		Use:   "reset-fencing --dir DIR --pool UUID [--epoch N]",
		Short: "Accept a new primary for a pool of a stopped replica server",
		Long: `Reset-fencing gives one pool of a stopped replica server's directory a fresh
fencing state: the server then accepts a primary of epoch N or newer (any
with the default 0), whatever epoch it saw before, and that primary sends a
whole copy of the pool. It is how an operator brings back a pool the server
set aside because its fencing state was lost, one whose history diverged
from its primary's, or one a jump of epoch beyond --max-epoch-jump locked.
Run it only once the pool's legitimate primary is known: a reset lets an
older primary in.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.dir == "" || o.pool == "" {
				return usageError(errors.New("--dir and --pool are required"))
			}
			return nil
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			if err := mirror.ResetFencing(o.dir, o.pool, o.epoch); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pool %s: fencing reset; a primary of epoch %d or newer will send a whole copy\n", o.pool, o.epoch)
			return nil
		}),
	}
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory of a stopped replica server")
	cmd.Flags().StringVar(&o.pool, "pool", "", "UUID of the pool, 32 hex digits")
	cmd.Flags().Uint64Var(&o.epoch, "epoch", 0, "oldest primary epoch to accept")
	return cmd
}

// query runs q against the running server at o.addr with o's TLS
// configuration, under an hour's deadline: a scrub reads every page the
// server holds.
func (o serverOptions) query(ctx context.Context, errOut io.Writer, q func(context.Context, *tls.Config) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	cfg, err := o.tls.config(false, errOut)
	if err != nil {
		return err
	}
	return q(ctx, cfg)
}
