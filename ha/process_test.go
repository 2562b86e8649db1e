package ha_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
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
// checks that its pool is then byte for byte the guardian's. The sealed
// variant kills the application of a sealed pool, whose file a crash
// leaves without an exact digest: the guardian recovers it with the key,
// and the standby checks the replica against the digest of its lines.
func TestKillFailover(t *testing.T) {
	t.Run("plain", func(t *testing.T) { killFailover(t, nil) })
	t.Run("sealed", func(t *testing.T) { killFailover(t, sealedKey) })
}

func killFailover(t *testing.T, key []byte) {
	for run := range killRuns(t) {
		coordDir, dir := t.TempDir(), fastDir(t)
		// The guardian holds the role while it opens the pool, which
		// decrypts a sealed one: a lease of 1 s, as the application's,
		// rides out a loaded machine.
		coord, err := ha.NewLeaseFile(coordDir, ha.LeaseFileOptions{TTL: time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { coord.Close() })
		sb := runStandbyOpts(t, ha.StandbyOptions{Coordinator: coord, Logger: newRecorder(t).logger(), Server: mirror.ServerOptions{Dir: filepath.Join(dir, "standby")}, Key: key})
		path := filepath.Join(dir, "app.pool")
		a := startAppProcess(t, path, coordDir, sb.replica, "POOL_KEY="+hex.EncodeToString(key))
		var first uint64
		_, err = fmt.Sscanf(a.waitFor(t, "ack "), "ack %d", &first)
		require.NoError(t, err)
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
		killed := time.Now()
		// Wait closes the pipe: the output is read to its end first.
		acked := a.lastAck(first)
		a.cmd.Wait()

		g, err := ha.NewGuard(ha.GuardOptions{
			PoolPath: path, Pool: "orders", Node: "a", Coordinator: coord,
			Standby: sb.replica, Handoff: sb.handoff, TLS: tlstesting.Default(t).PrimaryConfig(),
			Budget: 10 * time.Second, Verify: true, Logger: newRecorder(t).logger(), Key: key,
		})
		require.NoError(t, err)
		rep, err := g.Save(context.Background())
		require.NoError(t, err)
		// A guardian that cannot map the pool at the application's base
		// (the address is taken in this test process) rightly hashes.
		assert.True(t, rep.Listed || strings.Contains(rep.Fallback, "mapped at a new base"), rep.Fallback)
		assert.Equal(t, key != nil, rep.Handoff.Sealed)
		prom := sb.wait(t)
		got := counterWithKey(t, prom.Path, key)
		t.Logf("run %d: acked %d, promoted %d; save %v (%d bytes), restore %v, kill to promotion %v",
			run, acked, got, rep.Total, rep.Handoff.Bytes, prom.Restore, time.Since(killed))
		assert.Equal(t, "handoff", prom.Reason)
		assert.GreaterOrEqual(t, got, acked)
		assert.LessOrEqual(t, got, acked+1)
	}
}
