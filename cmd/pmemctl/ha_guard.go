package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/ha"
)

type haGuardOptions struct {
	pool, standby, handoff, pidFile string
	attach                          int
	verify                          bool
	budget, stopWait                time.Duration
	coord                           coordFlags
	tls                             tlsFlags
	key                             keyFlag
}

func newHAGuardCmd() *cobra.Command {
	var o haGuardOptions
	cmd := &cobra.Command{
		Use:   "guard --pool P --standby ADDR --name NAME (--coord-dir DIR | --etcd EP) [--budget 2s] (-- CMD ARGS... | --attach PID)",
		Short: "Run an application and hand its pool to the standby when it stops",
		Long: `Guard runs CMD (the application, with the pool's path in $` + haPoolEnv + `
and in place of "{pool}" in ARGS) and watches it. When it exits, however
(crash, SIGKILL, panic), or on power loss (SIGPWR, which init and UPS
daemons send, or 'pmemctl ha power-lost', which kills the application
first), the guard opens the pool, takes the role from the coordinator,
ships to the standby's replica (--standby) what it lacks, and sends the
handoff to the standby (--handoff, by default the port after --standby's),
all within --budget. When the application is an ha primary, the save
ships only the chunks its record beside the pool (P.dirty) lists; with
no usable record it finds them by hashing the whole pool on both sides,
and says why. --verify hashes the pool on both sides even then. A save
that overruns the budget tells the standby,
which then promotes from its last complete state. 'pmemctl ha switchover'
(SIGUSR1) stops the application with SIGTERM (SIGKILL after --stop-wait)
and hands over the same way: a planned switchover. With --attach PID
instead of CMD, the guard watches a running application (through a pidfd)
rather than start one. A sealed (encrypted) pool needs its key (--key-file):
it is shipped as its sealed file, so the standby's replica holds only
ciphertext, and the handoff carries the keyed digest of the saved lines,
which the standby checks with its own copy of the key.`,
		Args: cobra.ArbitraryArgs,
		PreRunE: func(_ *cobra.Command, args []string) error {
			if o.pool == "" || o.standby == "" {
				return usageError(errors.New("--pool and --standby are required"))
			}
			if (len(args) == 0) == (o.attach == 0) {
				return usageError(errors.New("give the application as -- CMD ARGS..., or --attach PID"))
			}
			return o.coord.check()
		},
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			return runHAGuard(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args)
		}),
	}
	cmd.Flags().StringVar(&o.pool, "pool", "", "the application's pool file")
	cmd.Flags().StringVar(&o.standby, "standby", "", "address of the standby's replica server, host:port")
	cmd.Flags().StringVar(&o.handoff, "handoff", "", "address of the standby's handoff listener (default: --standby's port plus one)")
	cmd.Flags().DurationVar(&o.budget, "budget", 2*time.Second, "time allowed for the save and the handoff")
	cmd.Flags().DurationVar(&o.stopWait, "stop-wait", 10*time.Second, "how long a switchover waits for the application to exit after SIGTERM")
	cmd.Flags().StringVar(&o.pidFile, "pid-file", "", "file to write the guard's process id to, for power-lost and switchover")
	cmd.Flags().IntVar(&o.attach, "attach", 0, "process id of a running application to guard, instead of CMD")
	cmd.Flags().BoolVar(&o.verify, "verify", false, "hash the whole pool on both sides for the handoff even when the dirty-chunk record is used")
	o.coord.register(cmd.Flags())
	o.tls.register(cmd.Flags())
	o.key.add(cmd)
	return cmd
}

func runHAGuard(ctx context.Context, out, errOut io.Writer, o haGuardOptions, args []string) error {
	ctx = defaultContext(ctx)
	cfg, err := haTLS(&o.tls, false, errOut)
	if err != nil {
		return err
	}
	if o.handoff == "" {
		if o.handoff, err = nextPort(o.standby); err != nil {
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
	g, err := ha.NewGuard(ha.GuardOptions{Key: key,
		PoolPath: o.pool, Pool: o.coord.name, Node: o.coord.node, Coordinator: coord,
		Standby: o.standby, Handoff: o.handoff, TLS: cfg, Budget: o.budget, Verify: o.verify,
		Logger: slog.New(slog.NewTextHandler(errOut, nil)),
	})
	if err != nil {
		return err
	}
	// The signals are caught before the pid file names this process:
	// SIGPWR's default action would end it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGPWR, syscall.SIGUSR1)
	defer signal.Stop(sig)
	if o.pidFile != "" {
		if err := os.WriteFile(o.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return err
		}
		defer os.Remove(o.pidFile)
	}
	a, err := startGuarded(o, args, out, errOut)
	if err != nil {
		return err
	}
	var why string
	select {
	case err := <-a.done:
		why = fmt.Sprintf("application exited: %v", exitStatus(err))
	case s := <-sig:
		if s == syscall.SIGUSR1 {
			why = "switchover"
			a.signal(syscall.SIGTERM)
			select {
			case <-a.done:
			case <-time.After(o.stopWait):
				a.kill()
				<-a.done
			}
		} else {
			why = "power lost"
			a.kill()
			<-a.done
		}
	case <-ctx.Done():
		a.kill()
		<-a.done
		return ctx.Err()
	}
	detected := time.Now()
	fmt.Fprintf(out, "%s: saving %s to %s\n", why, o.pool, o.standby)
	rep, err := g.Save(ctx)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	how := "listed by the dirty-chunk record"
	switch {
	case rep.Listed:
	case rep.Handoff.Sealed:
		how = "the whole sealed file: " + rep.Fallback
	default:
		how = "found by chunk hashes: " + rep.Fallback
	}
	fmt.Fprintf(out, "handed over: epoch %d batch %d, %d bytes shipped (%s), save %v (open %v, ship %v, hash %v, handoff %v) after detection at %s\n",
		rep.Handoff.Epoch, rep.Handoff.Seq, rep.Handoff.Bytes, how, rep.Total, rep.Open, rep.Ship, rep.Hash, rep.Send, detected.Format(time.RFC3339Nano))
	return nil
}

// guarded is the application a guard watches: a child it started, or a
// process it attached to.
type guarded struct {
	done   chan error
	signal func(os.Signal)
	kill   func()
}

// startGuarded starts CMD, or attaches to --attach, and watches it.
func startGuarded(o haGuardOptions, args []string, out, errOut io.Writer) (*guarded, error) {
	g := &guarded{done: make(chan error, 1)}
	if o.attach != 0 {
		if err := syscall.Kill(o.attach, 0); err != nil {
			return nil, fmt.Errorf("--attach %d: %w", o.attach, err)
		}
		go func() { g.done <- ha.WaitPID(context.Background(), o.attach) }()
		g.signal = func(s os.Signal) { syscall.Kill(o.attach, s.(syscall.Signal)) }
		g.kill = func() { ha.KillPID(o.attach) }
		return g, nil
	}
	args = appArgs(args, o.pool)
	c := exec.Command(args[0], args[1:]...)
	c.Env = append(os.Environ(), haPoolEnv+"="+o.pool)
	c.Stdout, c.Stderr = out, errOut
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	// Wait watches the child through a pidfd where the kernel has them.
	go func() { g.done <- c.Wait() }()
	g.signal = func(s os.Signal) { c.Process.Signal(s) }
	g.kill = func() { c.Process.Kill() }
	return g, nil
}

func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// newHASignalCmd returns a command that sends sig to the guard whose
// process id is in --pid-file.
func newHASignalCmd(name, sig string) *cobra.Command {
	var pidFile string
	signals := map[string]syscall.Signal{"SIGPWR": syscall.SIGPWR, "SIGUSR1": syscall.SIGUSR1}
	short := map[string]string{
		"power-lost": "Tell the guard that power is lost: it kills the application and hands over (for a UPS daemon's on-battery hook)",
		"switchover": "Hand the primary role to the standby: the guard stops the application and hands over",
	}
	cmd := &cobra.Command{
		Use:   name + " --pid-file FILE",
		Short: short[name],
		Args:  cobra.NoArgs,
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			if pidFile == "" {
				return usageError(errors.New("--pid-file is required"))
			}
			pid, err := readPIDFile(pidFile)
			if err != nil {
				return err
			}
			if err := syscall.Kill(pid, signals[sig]); err != nil {
				return fmt.Errorf("%s to guard %d: %w", sig, pid, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sent %s to guard %d\n", sig, pid)
			return nil
		}),
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "the guard's --pid-file")
	return cmd
}
