package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/seal"
	"github.com/pmemgo/pmemgo/recovery"
	"github.com/pmemgo/pmemgo/remote"
)

func newKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Make pool keys for sealed (encrypted) pools",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "new FILE",
		Short: "Write a new random pool key to FILE",
		Long: `New writes a fresh random 32-byte pool key to FILE, as 64 hex digits,
readable by its owner only (mode 0600). An existing FILE is never
overwritten. Give the file to create, check, info and dump with --key-file;
a program passes the key's bytes in heap.Options.Key.`,
		Args: cobra.ExactArgs(1),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			key := make([]byte, seal.KeySize)
			if _, err := rand.Read(key); err != nil {
				return err
			}
			f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				return usageError(fmt.Errorf("%s exists: key new never overwrites a file", args[0]))
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(f, hex.EncodeToString(key))
			if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a new pool key to %s\n", args[0])
			return nil
		}),
	})
	cmd.AddCommand(newKeyRotateCmd())
	return cmd
}

func newKeyRotateCmd() *cobra.Command {
	var cur, next, old keyFlag
	var rf remoteFlags
	var backup string
	cmd := &cobra.Command{
		Use:   "rotate POOL --key-file CURRENT --new-key-file NEW",
		Short: "Reseal a sealed pool under a new key",
		Long: `Rotate reseals every line of the sealed pool POOL under the key in NEW
(heap.RotateKey), which it then opens with alone. A rotation that was
interrupted leaves a pool that needs both keys: run rotate again with the
new key as --key-file and the old one as --old-key-file to finish it.

A remote pool (pmem://ADDR/NAME) is rotated through its memory node
(remote.RotateKey) while no one has it open, with --backup naming the local
backup that is resealed with it (and is complete afterwards) and the
--tls-* flags or --insecure to reach the node. An interrupted rotation is
finished by running the same command again.`,
		Args: cobra.ExactArgs(1),
		RunE: poolCommand(func(cmd *cobra.Command, args []string) error {
			var keys [3][]byte
			for i, k := range []*keyFlag{&cur, &next, &old} {
				var err error
				if keys[i], err = k.load(); err != nil {
					return err
				}
			}
			if keys[0] == nil || keys[1] == nil {
				return usageError(errors.New("--key-file and --new-key-file are required"))
			}
			if remote.IsURL(args[0]) {
				return rotateRemote(cmd, args[0], rf, backup, keys, next.file)
			}
			h, err := heap.Open(args[0], &heap.Options{Key: keys[0], OldKey: keys[2]})
			if err != nil {
				return err
			}
			err = h.RotateKey(cmd.Context(), keys[1])
			if err = errors.Join(err, h.Close()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is sealed under the key in %s\n", args[0], next.file)
			return nil
		}),
	}
	cmd.Flags().StringVar(&cur.file, "key-file", "", "file holding the pool's key")
	cmd.Flags().StringVar(&next.file, "new-key-file", "", "file holding the new key, as key new writes it")
	cmd.Flags().StringVar(&old.file, "old-key-file", "", "file holding the key an interrupted rotation was rotating from")
	cmd.Flags().StringVar(&backup, "backup", "", "for a pmem:// pool: its local backup file, resealed with it")
	rf.register(cmd)
	return cmd
}

// rotateRemote rotates the key of the remote pool url: keys are the
// current, new and old keys.
func rotateRemote(cmd *cobra.Command, url string, rf remoteFlags, backup string, keys [3][]byte, nextFile string) error {
	if backup == "" {
		return usageError(errors.New("a pmem:// pool needs --backup"))
	}
	if err := rf.tls.check(); err != nil {
		return err
	}
	opts := &remote.Options{Backup: backup, Insecure: rf.tls.insecure,
		TLS: remote.TLSFiles{CA: rf.tls.ca, Cert: rf.tls.cert, Key: rf.tls.key}}
	opts.Heap.Key, opts.Heap.OldKey = keys[0], keys[2]
	if err := remote.RotateKey(cmd.Context(), url, opts, keys[1]); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s is sealed under the key in %s\n", url, nextFile)
	return nil
}

// keyFlag is the --key-file flag of the commands that read or make
// sealed pools.
type keyFlag struct{ file string }

func (k *keyFlag) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.file, "key-file", "", "file holding the pool key of a sealed (encrypted) pool, as pmemctl key new writes it")
}

// load returns the key, or nil when no --key-file was given.
func (k *keyFlag) load() ([]byte, error) {
	if k.file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(k.file)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != seal.KeySize {
		return nil, usageError(fmt.Errorf("key file %s does not hold %d bytes in hex: %w", k.file, seal.KeySize, pmemgo.ErrBadKey))
	}
	return key, nil
}

// readable returns a path from which the pool at path reads as a plain
// pool: path itself, or for a sealed pool an anonymous file in memory
// holding its plaintext, which done removes. A sealed pool needs
// --key-file; a plain one must not be given one.
func (k *keyFlag) readable(path string) (plain string, done func(), err error) {
	sealed, err := recovery.IsSealedFile(path)
	if err != nil {
		return "", nil, err
	}
	key, err := k.load()
	switch {
	case err != nil:
		return "", nil, err
	case !sealed && key != nil:
		return "", nil, fmt.Errorf("%s is not a sealed pool, but --key-file was given: %w", path, pmemgo.ErrBadKey)
	case !sealed:
		return path, func() {}, nil
	case key == nil:
		return "", nil, fmt.Errorf("%s is a sealed (encrypted) pool: give its key with --key-file: %w", path, pmemgo.ErrBadKey)
	}
	f, err := recovery.UnsealFile(path, key)
	if err != nil {
		return "", nil, err
	}
	return recovery.MemfdPath(f), func() { f.Close() }, nil
}
