package remote

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
)

// Download copies the region named by rawURL into dst, which it sizes, at
// prefetch priority so that it does not delay the node's demand reads.
// cfg nil talks plain TCP. Tools read remote pools this way: the copy is
// a pool file like any other.
func Download(ctx context.Context, rawURL string, cfg *tls.Config, dst *os.File) error {
	addr, name, err := ParseURL(rawURL)
	if err != nil {
		return err
	}
	cl, err := dial(ctx, addr, cfg)
	if err != nil {
		return fmt.Errorf("download %s: %w", rawURL, err)
	}
	defer cl.close()
	r, epoch, err := cl.resolve(ctx, name, false, WriterID{})
	if err != nil {
		return fmt.Errorf("download %s: %w", rawURL, err)
	}
	if err := dst.Truncate(int64(r.size)); err != nil {
		return err
	}
	buf := make([]byte, MaxRead)
	for off := uint64(0); off < r.size; off += MaxRead {
		b := buf[:min(MaxRead, r.size-off)]
		if err := cl.read(ctx, epoch, r.id, off, b, prioPrefetch); err != nil {
			return fmt.Errorf("download %s at %d: %w", rawURL, off, err)
		}
		if _, err := dst.WriteAt(b, int64(off)); err != nil {
			return err
		}
	}
	return dst.Sync()
}
