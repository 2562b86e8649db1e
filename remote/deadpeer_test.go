package remote_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/fdtest"
	"github.com/pmemgo/pmemgo/remote"
)

// TestDeadClientReleasesClaim runs a writer in a network namespace of
// its own, then cuts that namespace off without a word: its connections
// neither close nor answer, as after a power loss. The node drops them
// once its keep-alive probes go unanswered, and with them the writer's
// claim, so another client opens the pool for writing within seconds;
// with the kernel's default probes that took over two minutes.
func TestDeadClientReleasesClaim(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a dead peer to be noticed")
	}
	ns := newNetns(t)
	node := startNode(t, t.TempDir(), ns.hostIP+":0")
	dir := t.TempDir()

	// The writer: the "stream" application, inside the namespace.
	c := exec.Command("ip", "netns", "exec", ns.name, os.Args[0], "-test.run=^$", node.url("g"), filepath.Join(dir, "a.backup"), "stream")
	c.Env = append(os.Environ(), roleEnv+"=app")
	c.Stderr = os.Stderr
	out, err := c.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, c.Start())
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	lines := bufio.NewScanner(out)
	require.True(t, lines.Scan(), "the writer committed nothing")
	go func() {
		for lines.Scan() {
		}
	}()

	opts := openOpts(dir, "b.backup")
	_, err = remote.Open(node.url("g"), opts)
	require.ErrorIs(t, err, remote.ErrBusy, "the writer holds the claim")

	ns.cut(t)
	cut := time.Now()
	for {
		h, err := remote.Open(node.url("g"), opts)
		if err == nil {
			t.Logf("claim released %v after the writer's network was cut", time.Since(cut).Round(time.Millisecond))
			require.NoError(t, h.Close())
			return
		}
		require.ErrorIs(t, err, remote.ErrBusy)
		require.Less(t, time.Since(cut), 40*time.Second, "the dead writer still holds the claim")
		time.Sleep(200 * time.Millisecond)
	}
}

// netns is a network namespace joined to this one by a veth pair, with an
// address on each end.
type netns struct {
	name, hostIf, nsIf, hostIP, nsIP string
}

// newNetns makes a namespace for the test, removed when it ends, or skips
// the test where that is not allowed (it needs root).
func newNetns(t *testing.T) *netns {
	t.Helper()
	pid := os.Getpid()
	x := pid%250 + 1
	n := &netns{
		name: fmt.Sprintf("pmemgo-test-%d", pid), hostIf: fmt.Sprintf("pmg%dh", pid%1000000), nsIf: fmt.Sprintf("pmg%dn", pid%1000000),
		hostIP: fmt.Sprintf("10.254.%d.1", x), nsIP: fmt.Sprintf("10.254.%d.2", x),
	}
	if err := ip("netns", "add", n.name); err != nil {
		t.Skipf("no network namespace: %v", err)
	}
	t.Cleanup(func() {
		ip("netns", "del", n.name)
		ip("link", "del", n.hostIf)
	})
	for _, args := range [][]string{
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf},
		{"link", "set", n.nsIf, "netns", n.name},
		{"addr", "add", n.hostIP + "/30", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "addr", "add", n.nsIP + "/30", "dev", n.nsIf},
		{"-n", n.name, "link", "set", n.nsIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
	} {
		require.NoError(t, ip(args...))
	}
	return n
}

// cut makes the namespace's end drop every packet silently: its address
// is removed, so what arrives for it is not delivered and nothing goes
// out.
func (n *netns) cut(t *testing.T) {
	t.Helper()
	require.NoError(t, ip("-n", n.name, "addr", "flush", "dev", n.nsIf))
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return errors.Join(fmt.Errorf("ip %v: %s", args, out), err)
	}
	return nil
}

// TestNodeDescriptorExhaustion makes a node run out of descriptors while
// connections keep coming: accept fails with EMFILE, which the node logs
// and retries rather than stop serving.
func TestNodeDescriptorExhaustion(t *testing.T) {
	var logs syncBuffer
	n, err := remote.NewNode(remote.NodeOptions{Dir: t.TempDir(), Insecure: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer n.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go n.Serve(l)
	addr := l.Addr().String()

	fdtest.Exhaust(t, addr, func() bool { return strings.Contains(logs.String(), "accept failed") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = remote.QueryStatus(ctx, addr, nil)
	require.NoError(t, err, "the node serves once descriptors are free again")
}
