package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/internal/certs"
)

// haPoolEnv names the environment variable that gives the application
// started by 'ha standby' and 'ha guard' the path of its pool; "{pool}"
// in its arguments is replaced by the path too.
const haPoolEnv = "PMEMGO_HA_POOL"

func newHACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ha",
		Short: "Fail over to a standby: standby, guard, power-lost, switchover, status, promote",
		Long: `The ha commands keep an application that embeds pmemgo running on another
machine after a failure. Who is primary comes from a coordinator: lease
files in a directory (--coord-dir, for the processes of one machine) or
etcd (--etcd). Every connection is mutual TLS 1.3 (--tls-ca, --tls-cert,
--tls-key, made by 'pmemctl cert').

The application gets its pool's path in $` + haPoolEnv + ` and in place of
"{pool}" in its arguments; it makes itself primary with ha.StartPrimary,
which takes a new epoch from the coordinator.`,
	}
	cmd.AddCommand(newHAStandbyCmd(), newHAGuardCmd(), newHASignalCmd("power-lost", "SIGPWR"), newHASignalCmd("switchover", "SIGUSR1"), newHAStatusCmd(), newHAPromoteCmd())
	return cmd
}

// coordFlags choose and configure the coordinator.
type coordFlags struct {
	dir     string
	etcd    []string
	etcdTLS bool
	ttl     time.Duration
	name    string
	node    string
}

func (f *coordFlags) register(fs *pflag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&f.dir, "coord-dir", "", "directory of the lease files (coordinator of one machine)")
	fs.StringSliceVar(&f.etcd, "etcd", nil, "etcd endpoints, host:port, comma-separated (coordinator of a cluster)")
	fs.BoolVar(&f.etcdTLS, "etcd-tls", false, "connect to etcd over TLS with the --tls-* files (as a client)")
	fs.DurationVar(&f.ttl, "ttl", 2*time.Second, "lease time to live (whole seconds with etcd)")
	fs.StringVar(&f.name, "name", "", "name of the pool in the coordinator (required)")
	fs.StringVar(&f.node, "node", host, "name of this node")
}

func (f *coordFlags) check() error {
	switch {
	case f.name == "":
		return usageError(errors.New("--name is required"))
	case (f.dir == "") == (len(f.etcd) == 0):
		return usageError(errors.New("give one of --coord-dir and --etcd"))
	}
	return nil
}

// open returns the coordinator and the function that releases it; t's
// files authenticate to etcd with --etcd-tls.
func (f *coordFlags) open(t *tlsFlags) (ha.Coordinator, func(), error) {
	if f.dir != "" {
		c, err := ha.NewLeaseFile(f.dir, ha.LeaseFileOptions{TTL: f.ttl})
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	}
	cfg := clientv3.Config{Endpoints: f.etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if f.etcdTLS {
		if t.insecure || t.check() != nil {
			return nil, nil, usageError(errors.New("--etcd-tls needs --tls-ca, --tls-cert and --tls-key"))
		}
		var err error
		if cfg.TLS, err = certs.LoadTLS(t.ca, t.cert, t.key, false); err != nil {
			return nil, nil, err
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd %v: %w", f.etcd, err)
	}
	c, err := ha.NewEtcd(cli, ha.EtcdOptions{TTL: f.ttl})
	if err != nil {
		cli.Close()
		return nil, nil, err
	}
	return c, func() { c.Close(); cli.Close() }, nil
}

// haTLS loads the TLS configuration: ha refuses plain TCP.
func haTLS(f *tlsFlags, server bool, errOut io.Writer) (*tls.Config, error) {
	if f.insecure {
		return nil, usageError(errors.New("ha needs TLS: --insecure is refused"))
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.config(server, errOut)
}

// nextPort returns addr with its port plus one: the default handoff
// address beside a replica address.
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", usageError(fmt.Errorf("address %s: %w", addr, err))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return "", usageError(fmt.Errorf("address %s: port must be 1 to 65534 to derive the handoff address; give it", addr))
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// appArgs returns the application's command line with "{pool}" replaced.
func appArgs(args []string, pool string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "{pool}", pool)
	}
	return out
}

// readPIDFile reads the process id that a guard wrote to its --pid-file.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a process id", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

func defaultContext(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}
