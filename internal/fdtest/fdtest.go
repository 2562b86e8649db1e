// Package fdtest holds a helper for tests of servers that run out of file
// descriptors.
package fdtest

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Exhaust makes the server at addr, in this process, run out of
// descriptors: it lowers the process's limit to the descriptors open now
// plus a few and dials addr until failed reports that the server saw an
// accept fail. Each connection costs a descriptor on both ends: when a
// dial finds none, Exhaust frees one of its own connections and dials
// again, so that its dial takes the descriptor before the server's accept
// can, and the connection waits for an accept that fails. It then closes
// its connections and restores the limit.
func Exhaust(t testing.TB, addr string, failed func() bool) {
	t.Helper()
	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old))
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	low := old
	low.Cur = uint64(len(fds) + 24)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old))
	}()
	for deadline := time.Now().Add(10 * time.Second); !failed(); time.Sleep(time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "the server never ran out of descriptors")
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			require.NotEmpty(t, conns, "no descriptor for a single connection: %v", err)
			conns[0].Close()
			conns = conns[1:]
			continue
		}
		conns = append(conns, c)
	}
}
