package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/mirror"
)

func newReplicaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replica",
		Short: "Run a replica server, or show the state of replicas",
	}
	cmd.AddCommand(newReplicaServeCmd(), newReplicaStatusCmd(), newReplicaScrubCmd(), newReplicaResetFencingCmd())
	return cmd
}

type serveOptions struct {
	dir, listen, metrics string
	tls                  tlsFlags
	policy               policyFlags
	limits               serveLimits
}

func newReplicaServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve --dir DIR --listen ADDR",
		Short: "Keep replicas of the pools that primaries send",
		Long: `Serve accepts primaries (mirror.Start in the primary's program) on ADDR and
keeps, in DIR, one pool file per replicated pool, named by the pool's UUID.
Each batch a primary sends is journaled and applied atomically and
acknowledged once durable, so that after the server stops every pool file
is a valid pool holding the primary's state at some commit: it passes
'pmemctl check' and opens with the heap API. A primary older (by epoch) than
one already seen for its pool is refused.

Peers connect over mutual TLS 1.3 (--tls-ca, --tls-cert, --tls-key; make
the files with 'pmemctl cert'): each presents a certificate signed by the
CA, whose name is its identity. By default any such identity may act as
the primary of any pool and read the status; --allow-primary and
--allow-status restrict that. --insecure serves plain TCP instead, with a
warning, and is refused on every interface (":PORT", "0.0.0.0", "::").

What any client can make the server spend is capped: connections
(--max-conns), pools (--max-pools), pool size (--max-pool-size), memory
held by frames being received (--max-memory), the wait for a silent peer
(--idle-timeout, --handshake-timeout), and how far ahead of the newest
epoch seen a primary's may be (--max-epoch-jump). Each pool is verified at
start; one that cannot be opened is set aside and reported by status.

With --metrics, Prometheus metrics are served on http://ADDR/metrics.
The server runs until interrupted (SIGINT or SIGTERM).`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.dir == "" || o.listen == "" {
				return usageError(errors.New("--dir and --listen are required"))
			}
			if err := o.tls.check(); err != nil {
				return err
			}
			if o.tls.insecure {
				if len(o.policy.primaries)+len(o.policy.status) > 0 {
					return usageError(errors.New("--allow-primary and --allow-status need TLS"))
				}
				return checkInsecureListen(o.listen)
			}
			return nil
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory of the replicated pools")
	cmd.Flags().StringVar(&o.listen, "listen", "", "address to accept primaries on, host:port")
	cmd.Flags().StringVar(&o.metrics, "metrics", "", "address to serve Prometheus metrics on, host:port (default: none)")
	o.tls.register(cmd.Flags())
	o.policy.register(cmd.Flags())
	o.limits.addFlags(cmd.Flags())
	return cmd
}

// runServe runs a replica server until ctx is done or a signal arrives.
func runServe(ctx context.Context, out, errOut io.Writer, o serveOptions) error {
	cfg, err := o.tls.config(true, errOut)
	if err != nil {
		return err
	}
	policy, err := o.policy.policy()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	opts := mirror.ServerOptions{
		Dir: o.dir, Logger: slog.New(slog.NewTextHandler(errOut, nil)), Metrics: reg,
		TLS: cfg, Insecure: cfg == nil, Policy: policy,
	}
	o.limits.apply(&opts)
	srv, err := mirror.NewServer(opts)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return errors.Join(err, srv.Close())
	}
	fmt.Fprintf(out, "serving replicas in %s on %s\n", o.dir, l.Addr())
	if o.metrics != "" {
		stopMetrics, err := serveMetrics(out, o.metrics, reg)
		if err != nil {
			return errors.Join(err, l.Close(), srv.Close())
		}
		defer stopMetrics()
	}
	return serveUntilStopped(ctx, l, srv.Serve, srv.Close)
}

// serveUntilStopped runs serve on l until it returns, or until ctx is
// done or SIGINT or SIGTERM arrives, and then closes the server.
func serveUntilStopped(ctx context.Context, l net.Listener, serve func(net.Listener) error, close func() error) error {
	ctx, stop := signal.NotifyContext(defaultContext(ctx), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- serve(l) }()
	select {
	case <-ctx.Done():
		return close()
	case err := <-done:
		return errors.Join(err, close())
	}
}

// serveMetrics serves reg's metrics over HTTP on addr until the returned
// function is called.
func serveMetrics(out io.Writer, addr string, reg *prometheus.Registry) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	fmt.Fprintf(out, "metrics on http://%s/metrics\n", l.Addr())
	return func() { hs.Close() }, nil
}

// serverOptions are the flags of a command that asks a running replica
// server (--addr, over TLS or --insecure) or reads a stopped one's
// directory (--dir).
type serverOptions struct {
	addr, dir string
	json      bool
	tls       tlsFlags
}

func (o *serverOptions) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.addr, "addr", "", "address of a running replica server")
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory of a stopped replica server")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	o.tls.register(cmd.Flags())
}

func (o *serverOptions) check(*cobra.Command, []string) error {
	if (o.addr == "") == (o.dir == "") {
		return usageError(errors.New("give one of --addr and --dir"))
	}
	if o.addr != "" {
		return o.tls.check()
	}
	return nil
}

type statusOptions = serverOptions

func newReplicaStatusCmd() *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status (--addr ADDR | --dir DIR)",
		Short: "Show each replicated pool's epoch, applied batch and lag",
		Long: `Status asks the replica server at ADDR for the state of each pool it keeps:
the epoch and sequence number of the batch its pool file holds, the newest
batch of its primary as of the primary's connection and how far behind that
the replica is, and whether a primary is connected. With --dir it reads the
journals of a stopped server's directory instead. A running server is asked
over mutual TLS (--tls-ca, --tls-cert, --tls-key), or over plain TCP with
--insecure.`,
		Args:    cobra.NoArgs,
		PreRunE: o.check,
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	o.register(cmd)
	return cmd
}

func runStatus(ctx context.Context, out, errOut io.Writer, o statusOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var st []mirror.PoolStatus
	var err error
	if o.addr != "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var cfg *tls.Config
		if cfg, err = o.tls.config(false, errOut); err != nil {
			return err
		}
		st, err = mirror.QueryStatus(ctx, o.addr, cfg)
	} else {
		st, err = mirror.ReadDirStatus(o.dir)
	}
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tEPOCH\tSEQ\tHEAD\tLAG\tSTATE\tPRIMARY\tLAST APPLIED\tLAST ERROR")
	for _, s := range st {
		applied := "-"
		if !s.LastApplied.IsZero() {
			applied = s.LastApplied.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", s.Pool, s.Epoch, s.Seq, s.Head, s.Lag,
			s.State, dash(s.Primary), applied, dash(s.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st) == 0 {
		fmt.Fprintln(out, "no replicated pool")
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
