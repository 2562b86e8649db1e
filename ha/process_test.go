package ha_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// killRuns is how many times TestKillFailover kills the application:
// $PMEMGO_HA_KILL_RUNS, or 3.
func killRuns(t *testing.T) int {
	if s := os.Getenv("PMEMGO_HA_KILL_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		return n
	}
	return 3
}

// TestKillFailover runs the application as a child process committing in
// sync mode, kills it with SIGKILL at a random moment, and has the
// guardian save and hand the pool over: the standby's promoted pool
// passes the checker and holds every commit the application acknowledged
// (and at most the one commit in flight at the kill). The save ships
// only what the application's dirty-chunk record lists, and the standby
// checks that its pool is then byte for byte the guardian's.
func TestKillFailover(t *testing.T) {
	for run := range killRuns(t) {
		coordDir, dir := t.TempDir(), fastDir(t)
		coord := newNode(t, "coord", coordDir).coord
		sb := runStandby(t, coord, filepath.Join(dir, "standby"), newRecorder(t))
		path := filepath.Join(dir, "app.pool")
		a := startAppProcess(t, path, coordDir, sb.replica)
		a.waitFor(t, "ack ")
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
		killed := time.Now()
		// Wait closes the pipe: the output is read to its end first.
		acked := a.lastAck(0)
		a.cmd.Wait()

		rep, err := verifyingGuard(t, coord, path, sb, newRecorder(t)).Save(context.Background())
		require.NoError(t, err)
		assert.True(t, rep.Listed, rep.Fallback)
		prom := sb.wait(t)
		got := counterOf(t, prom.Path)
		t.Logf("run %d: acked %d, promoted %d; save %v (%d bytes), restore %v, kill to promotion %v",
			run, acked, got, rep.Total, rep.Handoff.Bytes, prom.Restore, time.Since(killed))
		assert.Equal(t, "handoff", prom.Reason)
		assert.GreaterOrEqual(t, got, acked)
		assert.LessOrEqual(t, got, acked+1)
	}
}
