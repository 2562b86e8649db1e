package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/recovery"
)

// copyChunk is how much copyPool copies between progress updates.
const copyChunk = 16 << 20

// refuseExisting returns a usage error when path exists: recover and gc
// write a new file, never over one, and never the pool itself.
func refuseExisting(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return usageError(fmt.Errorf("%s exists: the output must be a new file", path))
	}
	return nil
}

// copyPool copies the pool file src to dst, a new file, under a shared
// lock on src so that no writer changes it meanwhile, and makes the copy
// durable. On error dst is removed.
func copyPool(cmd *cobra.Command, jsonOut bool, src, dst string) (n int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	if err := recovery.Lock(in, false, -1); err != nil {
		return 0, fmt.Errorf("copy %s: %w", src, err)
	}
	fi, err := in.Stat()
	if err != nil {
		return 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if errors.Is(err, fs.ErrExist) {
		return 0, refuseExisting(dst)
	}
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	bar := newProgress(cmd, jsonOut, countBytes, fi.Size(), "copying")
	defer bar.done()
	for n < fi.Size() {
		// CopyN hands os.File a LimitedReader, which it copies in the
		// kernel (copy_file_range) where it can.
		k, err := io.CopyN(out, in, min(copyChunk, fi.Size()-n))
		n += k
		bar.add(k)
		if err != nil {
			return n, fmt.Errorf("copy %s to %s: %w", src, dst, err)
		}
	}
	return n, out.Sync()
}
