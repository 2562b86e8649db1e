//go:build unix

package recovery

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo"
)

// Lock takes an flock on f, exclusive for a writer and shared for a
// reader, retrying until timeout: forever when zero, not at all when
// negative. flock locks belong to the open file, so a second Open in the
// same process is refused too. Closing f releases the lock.
func Lock(f *os.File, exclusive bool, timeout time.Duration) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("lock pool file: %w", err)
		}
		if timeout < 0 || timeout > 0 && time.Now().After(deadline) {
			return fmt.Errorf("pool is locked by another process or open: %w", pmemgo.ErrTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
