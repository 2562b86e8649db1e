package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/internal/certs"
)

func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Make a CA and node certificates for mutual TLS between primaries and replicas",
		Long: `Cert makes the certificates of a small deployment: a certificate authority
(cert ca), then one certificate per node signed by it (cert issue). Keys are
ECDSA P-256, written readable by their owner only (0600). Each node gets
cert.pem, key.pem and ca.pem in its directory, for --tls-cert, --tls-key and
--tls-ca:

  pmemctl cert ca --out ca
  pmemctl cert issue --ca ca --name replica-1 --role replica --host 10.0.0.2 --out replica-1
  pmemctl cert issue --ca ca --name app-1 --role primary --out app-1
  pmemctl cert issue --ca ca --name ops --role client --out ops

A node's name is its identity, which 'replica serve' authorizes
(--allow-primary, --allow-status).`,
	}
	cmd.AddCommand(newCertCACmd(), newCertIssueCmd())
	return cmd
}

func newCertCACmd() *cobra.Command {
	var out, name string
	var days int
	cmd := &cobra.Command{
		Use:   "ca --out DIR",
		Short: "Make a certificate authority in DIR (cert.pem, key.pem)",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if out == "" {
				return usageError(errors.New("--out is required"))
			}
			return checkDays(days)
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			ca, err := certs.NewCA(name, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			if err := ca.Save(out); err != nil {
				return fmt.Errorf("CA: %w", err)
			}
			printWritten(cmd.OutOrStdout(), "CA "+name, out, ca)
			return nil
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write the CA's certificate and key to")
	cmd.Flags().StringVar(&name, "name", "pmemgo CA", "the CA's name")
	cmd.Flags().IntVar(&days, "days", 3650, "validity in days")
	return cmd
}

func newCertIssueCmd() *cobra.Command {
	var caDir, out, name, role string
	var hosts []string
	var days int
	cmd := &cobra.Command{
		Use:   "issue --ca DIR --name NAME --role primary|replica|client [--host H,...] --out DIR",
		Short: "Make a node certificate signed by the CA in DIR",
		Long: `Issue makes a certificate for the node NAME, signed by the CA that 'cert ca'
wrote to the --ca directory, and writes it with its key and the CA's
certificate to --out. A replica's certificate serves primaries and names the
hosts (DNS names or IP addresses) they reach it at, which they check; a
primary's or a client's only connects.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if caDir == "" || out == "" || name == "" || role == "" {
				return usageError(errors.New("--ca, --name, --role and --out are required"))
			}
			return checkDays(days)
		},
		RunE: poolCommand(func(cmd *cobra.Command, _ []string) error {
			ca, err := certs.Load(caDir)
			if err != nil {
				return fmt.Errorf("CA: %w", err)
			}
			node, err := ca.Issue(certs.Request{
				Name: name, Role: certs.Role(role), Hosts: hosts,
				NotAfter: time.Now().Add(time.Duration(days) * 24 * time.Hour),
			})
			if errors.Is(err, certs.ErrInvalid) {
				return usageError(err)
			}
			if err != nil {
				return err
			}
			if err := node.Save(out); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := os.WriteFile(filepath.Join(out, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
				return err
			}
			printWritten(cmd.OutOrStdout(), role+" "+name, out, node)
			return nil
		}),
	}
	cmd.Flags().StringVar(&caDir, "ca", "", "directory of the CA made by 'cert ca'")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the node's files to")
	cmd.Flags().StringVar(&name, "name", "", "the node's name: its identity")
	cmd.Flags().StringVar(&role, "role", "", "primary, replica or client")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "for a replica, the DNS names and IP addresses it is reached at")
	cmd.Flags().IntVar(&days, "days", 365, "validity in days")
	return cmd
}

func checkDays(days int) error {
	if days <= 0 {
		return usageError(fmt.Errorf("--days %d: want a positive number of days", days))
	}
	return nil
}

func printWritten(out io.Writer, what, dir string, p *certs.Pair) {
	fmt.Fprintf(out, "%s: %s, %s (valid until %s)\n", what,
		filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile), p.Cert.NotAfter.UTC().Format(time.DateOnly))
}
