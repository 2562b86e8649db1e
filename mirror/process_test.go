package mirror_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// readAcks reads n "ack N" lines (0: until the end) and returns the last
// N, or last if it read none.
func readAcks(t *testing.T, lines <-chan string, last uint64, n int) uint64 {
	t.Helper()
	for line := range lines {
		num, ok := strings.CutPrefix(line, "ack ")
		if !ok {
			t.Fatalf("primary: %s", line)
		}
		v, err := strconv.ParseUint(num, 10, 64)
		require.NoError(t, err)
		last = v
		if n--; n == 0 {
			return last
		}
	}
	if n > 0 {
		t.Fatalf("primary ended after commit %d", last)
	}
	return last
}

// TestPrimaryKilled kills a primary process with SIGKILL at a random
// moment of a stream of commits. In sync mode every commit the primary
// saw acknowledged must be on the replica; in both modes the replica must
// pass the check and hold exactly the state after some commit.
func TestPrimaryKilled(t *testing.T) {
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for _, mode := range []string{"sync", "async"} {
		for round := range rounds {
			t.Run(fmt.Sprintf("%s/%d", mode, round), func(t *testing.T) {
				replicaDir := fastDir(t)
				srv, addr := startServer(t, replicaDir)
				pool := filepath.Join(fastDir(t), "primary.pool")
				c := startChild(t, "primary", append(childTLSEnv(t, tlstesting.Default(t).Primary), "POOL="+pool, "REPLICA="+addr, "MODE="+mode)...)
				// Kill once the replica is streaming, after a random number
				// of further commits.
				var acked uint64
				for deadline := time.Now().Add(20 * time.Second); ; {
					acked = readAcks(t, c.lines, acked, 1)
					if st := srv.Status(); len(st) == 1 && st[0].State == "streaming" && st[0].Seq > 0 {
						break
					}
					require.True(t, time.Now().Before(deadline), "replica not streaming: %+v", srv.Status())
				}
				acked = readAcks(t, c.lines, acked, 1+rng.IntN(300))
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				c.kill()
				acked = readAcks(t, c.lines, acked, 0)
				require.NoError(t, srv.Close())
				got := checkReplica(t, replicaFile(t, replicaDir))
				t.Logf("%s: primary killed after commit %d acknowledged; replica holds commit %d", mode, acked, got)
				if mode == "sync" {
					assert.GreaterOrEqual(t, got, acked, "an acknowledged commit is missing on the replica")
				}
				// The commit after the last one printed may have ended
				// before the kill; none after it had begun.
				assert.LessOrEqual(t, got, acked+1)
			})
		}
	}
}

// TestServerKilled kills the replica server with SIGKILL, repeatedly, while
// an async primary commits, and restarts it on the same address; in the
// second run the pool grows before each kill, which falls within 30 ms of
// the growth: around the replica's growth of its copy. The replica must catch up and
// converge to the primary byte for byte.
func TestServerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a replica server process")
	}
	for _, grow := range []bool{false, true} {
		t.Run(fmt.Sprintf("grow=%v", grow), func(t *testing.T) { serverKilled(t, grow) })
	}
}

func serverKilled(t *testing.T, grow bool) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	replicaDir := fastDir(t)
	tlsEnv := childTLSEnv(t, tlstesting.Default(t).Replica)
	c := startChild(t, "server", append(tlsEnv, "DIR="+replicaDir, "LISTEN=127.0.0.1:0")...)
	addr, ok := strings.CutPrefix(<-c.lines, "listening ")
	require.True(t, ok)
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	m, err := mirror.Start(h, secure(t, mirror.Options{
		Replicas: []string{addr}, Mode: mirror.Async, RetryInterval: 10 * time.Millisecond,
		MaxLagTime: 100 * time.Millisecond, Logger: testLogger(t),
	}))
	require.NoError(t, err)
	defer m.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var last uint64
	wg.Go(func() {
		for i := uint64(1); i <= 50000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.Update(func(tx *heap.Tx) error { return step(tx, i) }); err != nil {
				t.Errorf("commit %d: %v", i, err)
				return
			}
			last = i
		}
	})
	for range 3 {
		if grow {
			// The kill falls within 30 ms of the growth, while the
			// session reconnects and the replica grows its copy, or
			// just after.
			time.Sleep(time.Duration(30+rng.IntN(100)) * time.Millisecond)
			require.NoError(t, h.Grow(int64(h.Stats().Size)+poolSize))
			time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		} else {
			time.Sleep(time.Duration(30+rng.IntN(150)) * time.Millisecond)
		}
		c.kill()
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		c = startChild(t, "server", append(tlsEnv, "DIR="+replicaDir, "LISTEN="+addr)...)
		require.Equal(t, "listening "+addr, <-c.lines)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	flush(t, m)
	require.NoError(t, m.Close())
	primary := append([]byte(nil), h.Device().Bytes()...)
	c.stop(t)

	requireConverged(t, replicaDir, primary, last)
	t.Logf("replica converged at commit %d, pool of %d bytes", last, len(primary))
}
