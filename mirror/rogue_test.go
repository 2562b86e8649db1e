package mirror_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/fdtest"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// The tests in this file each reproduce what a client that follows no rule
// of the protocol did to a replica server, and check that the server
// refuses it and keeps serving a real primary.

// TestRogueHugeFrames sends headers announcing frames of 1 GiB: as a first
// message, and on three connections after a hello, as batches of which a
// little is sent. The server refuses the first from its header and
// allocates for the others only what arrives, within its memory cap.
func TestRogueHugeFrames(t *testing.T) {
	srv := serve(t, mirror.ServerOptions{Dir: fastDir(t), MaxMemory: 16 << 20})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	r := dialRogue(t, srv.addr)
	r.send(announce(wire.TypeHello, 1<<30))
	assert.Contains(t, r.refused(wire.CodeLimit), "exceeds")

	for i := range 3 {
		r := rogueHello(t, srv.addr, [16]byte{0xee, byte(i)}, 1, poolSize)
		require.Equal(t, wire.TypeReady, r.next().Type)
		r.send(announce(wire.TypeBatch, 1<<30), make([]byte, 1<<20))
	}
	// A frame larger than the memory left is refused when it outgrows it.
	r = rogueHello(t, srv.addr, [16]byte{0xee, 9}, 1, poolSize)
	require.Equal(t, wire.TypeReady, r.next().Type)
	go r.conn.Write(append(announce(wire.TypeBatch, 1<<30), make([]byte, 20<<20)...))
	assert.Contains(t, r.refused(wire.CodeLimit), "frames in flight")

	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 5, mirror.Options{})
	require.NoError(t, m.Close())
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(512<<20), "bytes allocated while rogues announced 5 GiB")
	srv.stillServing(t)
}

// announce returns the header of a frame announcing n payload bytes, as
// a rogue would send it: checksummed, so that only its length is wrong.
func announce(t wire.Type, n int) []byte {
	h := wire.BeginFrame(nil, t, 1, 1)
	binary.LittleEndian.PutUint32(h[8:], uint32(n))
	binary.LittleEndian.PutUint64(h[40:], xxhash.Sum64(h[:40]))
	return h
}

// TestRogueConnections opens more connections than the server takes:
// those over its cap are closed at once with an error, and once the others
// end, a real primary is served.
func TestRogueConnections(t *testing.T) {
	srv := serve(t, mirror.ServerOptions{Dir: fastDir(t), MaxConns: 3, HandshakeTimeout: 500 * time.Millisecond})
	var rogues []*rogue
	for range 3 {
		rogues = append(rogues, dialRogue(t, srv.addr))
	}
	// Over TLS the connection past the cap is closed before any handshake.
	cfg := tlstesting.Default(t).PrimaryConfig().Clone()
	cfg.ServerName = "127.0.0.1"
	extra, err := tls.Dial("tcp", srv.addr, cfg)
	if err == nil {
		extra.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = extra.Read(make([]byte, 1))
		extra.Close()
	}
	require.Error(t, err, "a connection past the cap is refused")
	assert.Contains(t, srv.log.String(), "too many connections")
	for _, r := range rogues {
		r.conn.Close()
	}
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 3, mirror.Options{RetryInterval: 20 * time.Millisecond})
	require.NoError(t, m.Close())
	srv.stillServing(t)
}

// TestRogueDescriptorExhaustion makes the server run out of descriptors
// while connections keep coming: accept fails with EMFILE, which the
// server logs and retries rather than stop serving.
func TestRogueDescriptorExhaustion(t *testing.T) {
	srv := serve(t, mirror.ServerOptions{Dir: fastDir(t), HandshakeTimeout: time.Second})
	fdtest.Exhaust(t, srv.addr, func() bool { return strings.Contains(srv.log.String(), "accept failed") })
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 3, mirror.Options{RetryInterval: 20 * time.Millisecond})
	require.NoError(t, m.Close())
	srv.stillServing(t)
}

// TestRogueSilentPeer says hello, starts a snapshot and then says nothing:
// the server ends the session after its idle timeout and drops the
// snapshot file, while a real primary that is idle as long keeps its
// session with pings.
func TestRogueSilentPeer(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir, IdleTimeout: 600 * time.Millisecond})
	uuid := [16]byte{0x51}
	r := rogueHello(t, srv.addr, uuid, 1, poolSize)
	require.Equal(t, wire.TypeReady, r.next().Type)
	r.send(wire.AppendFrame(nil, wire.TypeSnapBegin, 1, 0, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: uuid, Size: poolSize})))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, hexUUID(uuid)+".snap")); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "no snapshot file")
	}
	start := time.Now()
	msg := r.refused(wire.CodeIO)
	t.Logf("silent peer dropped after %v: %s", time.Since(start), msg)
	assert.Contains(t, msg, "idle timeout")
	_, err := r.r.Next()
	require.Error(t, err, "the server closes the connection")
	waitIdle(t, srv.Server, uuid)
	assert.NoFileExists(t, filepath.Join(dir, hexUUID(uuid)+".snap"))

	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 2, mirror.Options{Heartbeat: 30 * time.Millisecond})
	time.Sleep(1500 * time.Millisecond)
	require.NoError(t, commit(t, h, 3))
	st := m.Status()
	assert.Equal(t, "streaming", st[0].State)
	assert.Equal(t, 1, st[0].Snapshots, "the idle primary kept its session")
	require.NoError(t, m.Close())
	srv.stillServing(t)
}

// TestRogueHugePool asks the server to keep pools of sizes no pool has or
// beyond its cap: a sparse 32 GiB pool, 0 bytes, 4 KiB. Each is refused at
// hello, before any file is made.
func TestRogueHugePool(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	for _, tc := range []struct {
		size uint64
		code uint16
	}{{32 << 30, wire.CodeLimit}, {0, wire.CodeProtocol}, {4096, wire.CodeProtocol}, {poolSize + 100, wire.CodeProtocol}} {
		r := rogueHello(t, srv.addr, [16]byte{0x32}, 1, tc.size)
		t.Logf("pool of %d bytes: %s", tc.size, r.refused(tc.code))
	}
	files, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, files)
	srv.stillServing(t)
}

// TestRogueBadSnapshots sends snapshots that are not whole pools: none of
// the chunks, 1 MiB of random bytes, a valid pool of another UUID. None is
// installed, and the server starts again afterwards and serves a real
// primary.
func TestRogueBadSnapshots(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	uuid := [16]byte{0xba, 0xd}
	random := make([]byte, 1<<20)
	rand.Read(random)
	other := openPrimary(t, fastDir(t))
	otherImage := bytes.Clone(other.Device().Bytes())
	require.NoError(t, other.Close())

	for _, tc := range []struct {
		name   string
		size   uint64
		chunks [][]byte
		want   string
	}{
		{"empty", 1 << 20, nil, "missing"},
		{"random bytes", 1 << 20, [][]byte{random}, "no valid pool header"},
		{"another pool", poolSize, [][]byte{otherImage[:poolSize/2], otherImage[poolSize/2:]}, "want pool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rogueHello(t, srv.addr, uuid, 1, tc.size)
			require.Equal(t, wire.TypeReady, r.next().Type)
			frames := [][]byte{wire.AppendFrame(nil, wire.TypeSnapBegin, 1, 0, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: uuid, Size: tc.size}))}
			var off uint64
			for _, c := range tc.chunks {
				frames = append(frames, wire.AppendFrame(nil, wire.TypeSnapChunk, 1, 0, append(wire.AppendSnapChunkHeader(nil, off), c...)))
				off += uint64(len(c))
			}
			frames = append(frames, wire.AppendFrame(nil, wire.TypeSnapEnd, 1, 0, wire.AppendSnapEnd(nil, wire.SnapEnd{ConsistentAt: 1})),
				wire.AppendFrame(nil, wire.TypeBatch, 1, 1, wire.AppendBatchHeader(nil, wire.Chain{}, 0)))
			// The server may close the connection before the rogue is
			// done writing: what counts is its answer.
			go r.conn.Write(bytes.Join(frames, nil))
			assert.Contains(t, r.refused(wire.CodeProtocol), tc.want)
			waitIdle(t, srv.Server, uuid)
			assert.NoFileExists(t, filepath.Join(dir, hexUUID(uuid)+".pool"))
		})
	}
	require.NoError(t, srv.Close())
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 3, mirror.Options{})
	require.NoError(t, m.Close())
	srv.stillServing(t)
}

// TestRoguePoolDescriptors says hello for many pools: the server holds no
// descriptor for a pool no session uses.
func TestRoguePoolDescriptors(t *testing.T) {
	srv := serve(t, mirror.ServerOptions{Dir: fastDir(t), MaxPools: 40})
	base := openFDs(t)
	for i := range 40 {
		r := rogueHello(t, srv.addr, [16]byte{0xfd, byte(i)}, 1, poolSize)
		require.Equal(t, wire.TypeReady, r.next().Type)
		r.conn.Close()
		waitIdle(t, srv.Server, [16]byte{0xfd, byte(i)})
	}
	assert.LessOrEqual(t, openFDs(t), base+2, "descriptors held after 40 pools")
	r := rogueHello(t, srv.addr, [16]byte{0xfd, 0xff}, 1, poolSize)
	assert.Contains(t, r.refused(wire.CodeLimit), "40 pools")
	srv.stillServing(t)
}

// TestRogueFlood opens 10,000 connections in waves, each sending a hello
// announcing 1 GiB, a hello for a new pool followed by a batch announcing
// 1 GiB of which 256 KiB arrive, or nothing, while a real primary commits
// in sync mode: every commit succeeds, and the memory in use stays within
// the server's caps.
func TestRogueFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections")
	}
	const maxMemory = 32 << 20
	srv := serve(t, mirror.ServerOptions{Dir: fastDir(t), MaxMemory: maxMemory, MaxPools: 64,
		HandshakeTimeout: time.Second, IdleTimeout: 2 * time.Second})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 1, mirror.Options{AckTimeout: 20 * time.Second})
	stop, done := make(chan struct{}), make(chan error, 1)
	var commits uint64 = 1
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			i := commits + 1
			if err := h.Update(func(tx *heap.Tx) error { return step(tx, i) }); err != nil {
				done <- err
				return
			}
			commits = i
		}
	}()
	oversized := append(announce(wire.TypeBatch, 1<<30), make([]byte, 256<<10)...)
	var peak uint64
	for wave := range 50 {
		conns := make([]net.Conn, 0, 200)
		for i := range 200 {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				continue
			}
			conns = append(conns, c)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			switch i % 3 {
			case 0:
				c.Write(announce(wire.TypeHello, 1<<30))
			case 1:
				uuid := [16]byte{0xf1, byte(wave), byte(i)}
				c.Write(wire.AppendFrame(nil, wire.TypeHello, 1, 0, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: poolSize})))
				c.Write(oversized)
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		for _, c := range conns {
			c.Close()
		}
	}
	close(stop)
	require.NoError(t, <-done)
	flush(t, m)
	t.Logf("%d commits during the flood; peak heap in use %d MiB", commits, peak>>20)
	assert.Less(t, peak, uint64(256<<20), "heap in use under the flood")
	require.NoError(t, m.Close())
	srv.stillServing(t)
}
