package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/mirror"
)

type haStandbyOptions struct {
	dir, listen, handoff, path string
	coord                      coordFlags
	tls                        tlsFlags
	key                        keyFlag
}

func newHAStandbyCmd() *cobra.Command {
	var o haStandbyOptions
	cmd := &cobra.Command{
		Use:   "standby --dir DIR --listen ADDR --name NAME (--coord-dir DIR | --etcd EP) [-- CMD ARGS...]",
		Short: "Replicate a pool and take it over when its primary fails",
		Long: `Standby is a replica server (as 'pmemctl replica serve') for one pool that
takes the pool over: when the primary's guardian hands it over ('pmemctl ha
guard', on --handoff-listen, by default the port after --listen's), or when
the pool has had no primary for a moment after having one (its lease ran
out without a handoff), it installs the newest complete state at --path
(default DIR/promoted/NAME.pool), checks it (a pool that fails the check is
never given to the application), opens it (recovery), and runs CMD with the
pool's path in $` + haPoolEnv + ` and in place of "{pool}" in ARGS. It
then waits for CMD and exits with its status. A handoff for another pool,
another batch or another content is refused and logged; the standby keeps
its last complete state. A sealed (encrypted) pool needs its key
(--key-file) to be promoted: the replica server never uses it and stores
only ciphertext; the promotion checks every record and the digest of the
lines (against the guardian's, after a handoff) before the application
starts, and the promoted pool stays sealed.`,
		Args: cobra.ArbitraryArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.dir == "" || o.listen == "" {
				return usageError(errors.New("--dir and --listen are required"))
			}
			return o.coord.check()
		},
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runHAStandby(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args)
		}),
	}
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory of the replica")
	cmd.Flags().StringVar(&o.listen, "listen", "", "address to accept the primary on, host:port")
	cmd.Flags().StringVar(&o.handoff, "handoff-listen", "", "address to accept handoffs on (default: --listen's port plus one)")
	cmd.Flags().StringVar(&o.path, "path", "", "where the promoted pool is installed (default DIR/promoted/NAME.pool)")
	o.coord.register(cmd.Flags())
	o.tls.register(cmd.Flags())
	o.key.add(cmd)
	return cmd
}

func runHAStandby(ctx context.Context, out, errOut io.Writer, o haStandbyOptions, args []string) error {
	ctx, stop := signal.NotifyContext(defaultContext(ctx), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := haTLS(&o.tls, true, errOut)
	if err != nil {
		return err
	}
	if o.handoff == "" {
		if o.handoff, err = nextPort(o.listen); err != nil {
			return err
		}
	}
	key, err := o.key.load()
	if err != nil {
		return err
	}
	coord, closeCoord, err := o.coord.open(&o.tls)
	if err != nil {
		return err
	}
	defer closeCoord()
	log := slog.New(slog.NewTextHandler(errOut, nil))
	sb, err := ha.NewStandby(ha.StandbyOptions{Key: key,
		Pool: o.coord.name, Coordinator: coord, Path: o.path, Logger: log,
		Server: mirror.ServerOptions{Dir: o.dir, TLS: cfg},
	})
	if err != nil {
		return err
	}
	rl, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", o.handoff)
	if err != nil {
		rl.Close()
		return err
	}
	fmt.Fprintf(out, "standby of %s: replica on %s, handoffs on %s\n", o.coord.name, rl.Addr(), hl.Addr())
	p, err := sb.Run(ctx, rl, hl)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "promoted: %s (%s), restored in %v\n", p.Path, p.Reason, p.Restore)
	if len(args) == 0 {
		return nil
	}
	return runApp(ctx, out, errOut, p.Path, args)
}

// runApp runs the application on pool until it exits, passing it the
// signals that would stop this process.
func runApp(ctx context.Context, out, errOut io.Writer, pool string, args []string) error {
	args = appArgs(args, pool)
	c := exec.Command(args[0], args[1:]...)
	c.Env = append(os.Environ(), haPoolEnv+"="+pool)
	c.Stdout, c.Stderr = out, errOut
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return appExit(args[0], err)
	case <-ctx.Done():
		c.Process.Signal(syscall.SIGTERM)
		return appExit(args[0], <-done)
	}
}

func appExit(name string, err error) error {
	if err != nil {
		return fmt.Errorf("application %s: %w", name, err)
	}
	return nil
}
