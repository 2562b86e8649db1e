package ha

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// WaitPID waits until the process pid, which need not be a child of this
// one (a guardian attached to a running application), has exited, or ctx
// is done. It watches a pidfd, so that a PID reused by another process
// is never mistaken for the application. It fails at once if pid does not
// name a running process.
func WaitPID(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("ha: watch process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// The poll wakes up now and then to see whether ctx is done.
	const tick = 50 * time.Millisecond
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(tick/time.Millisecond))
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return fmt.Errorf("ha: watch process %d: %w", pid, err)
		case n > 0:
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// KillPID sends SIGKILL to the process that WaitPID watches, through a
// pidfd, so that the signal cannot reach another process that took pid.
func KillPID(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("ha: kill process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return fmt.Errorf("ha: kill process %d: %w", pid, err)
	}
	return nil
}
