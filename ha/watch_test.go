package ha_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
)

// TestWaitPID watches a process through a pidfd: WaitPID returns when it
// is killed, and fails for a process that does not exist.
func TestWaitPID(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- ha.WaitPID(context.Background(), pid) }()

	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ha.WaitPID(short, pid), context.DeadlineExceeded)
	select {
	case err := <-done:
		t.Fatalf("WaitPID returned while the process runs: %v", err)
	default:
	}
	require.NoError(t, ha.KillPID(pid))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("WaitPID did not see the process die")
	}
	cmd.Wait()
	err := ha.WaitPID(context.Background(), pid)
	assert.Error(t, err, "a reaped process cannot be watched")
}
