package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/remote"
)

func newMemnodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "memnode",
		Short: "Run a memory node holding remote pools, or show its state",
	}
	cmd.AddCommand(newMemnodeServeCmd(), newMemnodeStatusCmd(), newMemnodeScrubCmd())
	return cmd
}

type memnodeServeOptions struct {
	dir, listen           string
	tls                   tlsFlags
	allowRead, allowWrite []string
	maxRegions            int
	maxBytes              sizeValue
	idleTimeout           time.Duration
}

// policy returns the policy of the --allow-* flags, or nil if none is
// given.
func (o *memnodeServeOptions) policy() (*remote.Policy, error) {
	if o.allowRead == nil && o.allowWrite == nil {
		return nil, nil
	}
	p := &remote.Policy{Readers: map[string][]string{}, Writers: map[string][]string{}}
	for _, f := range []struct {
		flag string
		vals []string
		m    map[string][]string
	}{{"--allow-read", o.allowRead, p.Readers}, {"--allow-write", o.allowWrite, p.Writers}} {
		for _, v := range f.vals {
			name, region, ok := strings.Cut(v, "=")
			if !ok || name == "" || region == "" {
				return nil, usageError(fmt.Errorf("%s %q: want IDENTITY=REGION (REGION * for all)", f.flag, v))
			}
			f.m[name] = append(f.m[name], region)
		}
	}
	return p, nil
}

func newMemnodeServeCmd() *cobra.Command {
	var o memnodeServeOptions
	cmd := &cobra.Command{
		Use:   "serve --dir DIR --listen ADDR",
		Short: "Hold named regions in memory and serve them to remote pools",
		Long: `Serve holds named regions, each backed by a file NAME.region in DIR (mapped
shared, so held in memory and surviving a restart), and serves the page
reads and line write-backs of remote pools (remote.Open("pmem://ADDR/NAME")).
Demand reads are served ahead of write-backs and prefetches, and a
write-back is acknowledged once msync'ed. It also answers for its own
regions: a name resolves to its region, size and the node's epoch, which
changes at every start.

A region's pages are reserved on the file system when it is created, so
a create that does not fit is refused rather than a later write-back
failing; --max-regions and --max-bytes bound the regions clients may
create and their total size. A connection that holds no region's write
claim and sends nothing for --idle-timeout is closed (clients reconnect),
so that silent clients give their connection slots back.

Clients connect over mutual TLS 1.3 (--tls-ca, --tls-cert, --tls-key; see
'pmemctl cert'), or over plain TCP with --insecure, refused on every
interface. With TLS, --allow-read and --allow-write restrict which client
identities (certificate names) may read and write which regions. The node runs until interrupted (SIGINT or SIGTERM).`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.dir == "" || o.listen == "" {
				return usageError(errors.New("--dir and --listen are required"))
			}
			if o.maxRegions < 1 {
				return usageError(fmt.Errorf("--max-regions %d: want at least 1", o.maxRegions))
			}
			if o.idleTimeout <= 0 {
				return usageError(fmt.Errorf("--idle-timeout %v: want a positive duration", o.idleTimeout))
			}
			if err := o.tls.check(); err != nil {
				return err
			}
			if o.tls.insecure {
				if o.allowRead != nil || o.allowWrite != nil {
					return usageError(errors.New("--allow-read and --allow-write need TLS"))
				}
				return checkInsecureListen(o.listen)
			}
			_, err := o.policy()
			return err
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runMemnode(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory of the region files")
	cmd.Flags().StringVar(&o.listen, "listen", "", "address to accept clients on, host:port")
	cmd.Flags().StringArrayVar(&o.allowRead, "allow-read", nil, "IDENTITY=REGION: the client certificate named IDENTITY may read REGION (* for every region); repeat (default: any certificate the CA signed may do anything)")
	cmd.Flags().IntVar(&o.maxRegions, "max-regions", 4096, "regions the node holds at most")
	cmd.Flags().DurationVar(&o.idleTimeout, "idle-timeout", 5*time.Minute, "close a connection that holds no write claim after this long without a request")
	cmd.Flags().Var(&o.maxBytes, "max-bytes", "total size of the regions the node holds at most (suffixes K, M, G, T; default: what the file system holds)")
	cmd.Flags().StringArrayVar(&o.allowWrite, "allow-write", nil, "IDENTITY=REGION: IDENTITY may create, write and read REGION (* for every region); repeat")
	o.tls.register(cmd.Flags())
	return cmd
}

func runMemnode(ctx context.Context, out, errOut io.Writer, o memnodeServeOptions) error {
	cfg, err := o.tls.config(true, errOut)
	if err != nil {
		return err
	}
	policy, err := o.policy()
	if err != nil {
		return err
	}
	n, err := remote.NewNode(remote.NodeOptions{Dir: o.dir, TLS: cfg, Insecure: cfg == nil, Policy: policy,
		MaxRegions: o.maxRegions, MaxBytes: int64(o.maxBytes), IdleTimeout: o.idleTimeout,
		Logger: slog.New(slog.NewTextHandler(errOut, nil))})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return errors.Join(err, n.Close())
	}
	fmt.Fprintf(out, "serving regions in %s on %s\n", o.dir, l.Addr())
	return serveUntilStopped(ctx, l, n.Serve, n.Close)
}

type memnodeStatusOptions struct {
	addr string
	json bool
	tls  tlsFlags
}

func newMemnodeStatusCmd() *cobra.Command {
	var o memnodeStatusOptions
	cmd := &cobra.Command{
		Use:   "status --addr ADDR",
		Short: "Show a memory node's regions, queue depths and bytes served",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.addr == "" {
				return usageError(errors.New("--addr is required"))
			}
			return o.tls.check()
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			return runMemnodeStatus(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}),
	}
	cmd.Flags().StringVar(&o.addr, "addr", "", "address of a running memory node")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	o.tls.register(cmd.Flags())
	return cmd
}

func runMemnodeStatus(ctx context.Context, out, errOut io.Writer, o memnodeStatusOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := o.tls.config(false, errOut)
	if err != nil {
		return err
	}
	st, err := remote.QueryStatus(ctx, o.addr, cfg)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(out, st)
	}
	fmt.Fprintf(out, "epoch %#x, %d connections, queues: %d demand, %d write-back/prefetch\n",
		st.Epoch, st.Connections, st.QueueHigh, st.QueueLow)
	fmt.Fprintf(out, "%d reads (%d bytes served), %d write-backs (%d bytes)\n",
		st.Reads, st.BytesServed, st.Writes, st.BytesWritten)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tSIZE\tCLAIMED\tLAST WRITER")
	for _, r := range st.Regions {
		fmt.Fprintf(tw, "%s\t%d\t%t\t%s\n", r.Name, r.Size, r.Claimed, r.LastWriter)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.DamagedReads > 0 {
		fmt.Fprintf(out, "%d reads refused: a page did not match its checksum\n", st.DamagedReads)
	}
	for _, p := range st.Problems {
		fmt.Fprintf(out, "found at start: %s\n", p)
	}
	return nil
}

// remoteFlags let a command that reads a pool read a remote one
// (pmem://ADDR/NAME), through the node.
type remoteFlags struct {
	tls tlsFlags
}

func (f *remoteFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.tls.ca, "tls-ca", "", "for a pmem:// pool: PEM file of the CA that signs the memory node's certificate")
	fs.StringVar(&f.tls.cert, "tls-cert", "", "for a pmem:// pool: PEM file of this client's certificate")
	fs.StringVar(&f.tls.key, "tls-key", "", "for a pmem:// pool: PEM file of this client's private key")
	fs.BoolVar(&f.tls.insecure, "insecure", false, "for a pmem:// pool: plain TCP to the memory node")
}

// local returns a local file holding the pool named by arg: arg itself,
// or a copy of a remote pool downloaded from its node, removed by done.
func (f *remoteFlags) local(cmd *cobra.Command, arg string) (path string, done func(), err error) {
	if !remote.IsURL(arg) {
		return arg, func() {}, nil
	}
	if err := f.tls.check(); err != nil {
		return "", nil, err
	}
	cfg, err := f.tls.config(false, cmd.ErrOrStderr())
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "pmemctl-remote-")
	if err != nil {
		return "", nil, err
	}
	done = func() { os.RemoveAll(dir) }
	file, err := os.Create(filepath.Join(dir, "pool"))
	if err != nil {
		done()
		return "", nil, err
	}
	defer file.Close()
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if err := remote.Download(ctx, arg, cfg, file); err != nil {
		done()
		return "", nil, err
	}
	return file.Name(), done, nil
}
