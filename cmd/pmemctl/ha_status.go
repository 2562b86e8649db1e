package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/ha"
)

type haStatusOptions struct {
	standby    []string
	standbyDir string
	json       bool
	coord      coordFlags
	tls        tlsFlags
}

func newHAStatusCmd() *cobra.Command {
	var o haStatusOptions
	cmd := &cobra.Command{
		Use:   "status --name NAME (--coord-dir DIR | --etcd EP) [--standby ADDR]... [--standby-dir DIR] [--json]",
		Short: "Show the primary of a pool, its token, and its standbys' replicas",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return o.coord.check()
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runHAStatus(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	cmd.Flags().StringArrayVar(&o.standby, "standby", nil, "address of a standby's replica server to ask (TLS flags needed); repeat")
	cmd.Flags().StringVar(&o.standbyDir, "standby-dir", "", "replica directory of a standby on this machine, to show its last promotion and handoff")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	o.coord.register(cmd.Flags())
	o.tls.register(cmd.Flags())
	return cmd
}

func runHAStatus(ctx context.Context, out, errOut io.Writer, o haStatusOptions) error {
	ctx, cancel := context.WithTimeout(defaultContext(ctx), 10*time.Second)
	defer cancel()
	coord, closeCoord, err := o.coord.open(&o.tls)
	if err != nil {
		return err
	}
	defer closeCoord()
	so := ha.StatusOptions{Pool: o.coord.name, Coordinator: coord, Standbys: o.standby, StandbyDir: o.standbyDir}
	if len(o.standby) > 0 {
		if so.TLS, err = haTLS(&o.tls, false, errOut); err != nil {
			return err
		}
	}
	st, err := ha.Status(ctx, so)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(out, st)
	}
	if l := st.Primary; l == nil {
		fmt.Fprintf(out, "pool %s: no primary\n", st.Pool)
	} else {
		fmt.Fprintf(out, "pool %s: primary %s, token (epoch) %d", st.Pool, l.Node, l.Token)
		if !l.Expires.IsZero() {
			fmt.Fprintf(out, ", lease until %s", l.Expires.Format(time.RFC3339Nano))
		}
		fmt.Fprintln(out)
	}
	if p := st.Promotion; p != nil {
		fmt.Fprintf(out, "last promotion: %s at %s (%s), epoch %d batch %d, restored in %v", p.Path, p.At.Format(time.RFC3339Nano), p.Reason, p.Epoch, p.Seq, p.Restore)
		if h := st.LastHandoff; h != nil {
			fmt.Fprintf(out, "; handoff of %d bytes saved in %v", h.Bytes, h.Save)
		}
		fmt.Fprintln(out)
	} else if o.standbyDir != "" {
		fmt.Fprintf(out, "standby %s: not promoted\n", o.standbyDir)
	}
	for _, s := range st.Standbys {
		if s.Error != "" {
			fmt.Fprintf(out, "standby %s: %s\n", s.Addr, s.Error)
			continue
		}
		for _, p := range s.Pools {
			fmt.Fprintf(out, "standby %s: pool %s epoch %d batch %d, %d batches behind, %s\n", s.Addr, p.Pool, p.Epoch, p.Seq, p.Lag, p.State)
		}
	}
	return nil
}
