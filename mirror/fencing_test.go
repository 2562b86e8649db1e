package mirror_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
	"github.com/pmemgo/pmemgo/mirror/wire"
)

// copyFile copies a closed pool file.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o644))
}

// commit runs commit i of the workload.
func commit(t *testing.T, h *heap.Heap, i uint64) error {
	t.Helper()
	return h.Update(func(tx *heap.Tx) error { return step(tx, i) })
}

// TestStaleEpoch replicates a pool through two incarnations, then starts
// a primary from a copy of the pool taken before them: its epoch is older
// than the replica has seen, so the replica refuses it, and both sides say
// so.
func TestStaleEpoch(t *testing.T) {
	replicaDir, primaryDir := fastDir(t), fastDir(t)
	srv, addr := startServer(t, replicaDir)
	path, stale := filepath.Join(primaryDir, "primary.pool"), filepath.Join(primaryDir, "stale.pool")
	h := openPrimary(t, primaryDir)
	require.NoError(t, commit(t, h, 1))
	require.NoError(t, h.Close())
	copyFile(t, path, stale)

	h, err := heap.Open(path, nil)
	require.NoError(t, err)
	for i := range uint64(2) {
		m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t)}))
		require.NoError(t, err)
		assert.Equal(t, i+1, m.Epoch())
		require.NoError(t, commit(t, h, i+2))
		flush(t, m)
		require.NoError(t, m.Close())
	}
	require.NoError(t, h.Close())

	old, err := heap.Open(stale, nil)
	require.NoError(t, err)
	defer old.Close()
	m, err := mirror.Start(old, secure(t, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t)}))
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, uint64(1), m.Epoch())
	err = commit(t, old, 2)
	require.ErrorIs(t, err, mirror.ErrStaleEpoch)
	t.Logf("commit on the stale primary: %v", err)
	assert.Contains(t, err.Error(), "older than epoch 2")
	st := m.Status()
	require.Len(t, st, 1)
	assert.Equal(t, "refused", st[0].State)
	assert.ErrorIs(t, st[0].Err, mirror.ErrStaleEpoch)

	rs := srv.Status()
	require.Len(t, rs, 1)
	assert.Equal(t, uint64(2), rs[0].SeenEpoch)
	assert.Equal(t, uint64(2), rs[0].Epoch)
	assert.Contains(t, rs[0].LastError, "primary epoch 1 is older than epoch 2")
	require.NoError(t, srv.Close())
	assert.Equal(t, uint64(3), checkReplica(t, replicaFile(t, replicaDir)), "the replica kept the newer primary's state")
}

// fakePrimary is a connection to a replica server that says hello as the
// primary of a pool would.
type fakePrimary struct {
	conn  net.Conn
	r     *wire.Reader
	epoch uint64
	ready wire.Frame
}

func dialFake(t *testing.T, addr string, uuid [16]byte, epoch uint64) *fakePrimary {
	t.Helper()
	return fakeOver(t, dialServer(t, addr), uuid, epoch)
}

// dialFakePlain is dialFake for a server on plain TCP.
func dialFakePlain(t *testing.T, addr string, uuid [16]byte, epoch uint64) *fakePrimary {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return fakeOver(t, conn, uuid, epoch)
}

// fakeOver says hello over conn and reads the server's answer.
func fakeOver(t *testing.T, conn net.Conn, uuid [16]byte, epoch uint64) *fakePrimary {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.Write(wire.AppendFrame(nil, wire.TypeHello, epoch, 0, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: poolSize})))
	require.NoError(t, err)
	fp := &fakePrimary{conn: conn, r: wire.NewReader(conn), epoch: epoch}
	fp.ready, err = fp.r.Next()
	require.NoError(t, err)
	require.Equal(t, wire.TypeReady, fp.ready.Type)
	return fp
}

// batchFrame encodes a batch of one run following the batch whose chain
// value is prev.
func batchFrame(epoch, seq uint64, prev wire.Chain, off uint64, data []byte) []byte {
	p := wire.AppendRun(wire.AppendBatchHeader(nil, prev, 1), off, data)
	return wire.AppendFrame(nil, wire.TypeBatch, epoch, seq, p)
}

// TestBadFrameRejected sends a replica bad frames as a primary would: each
// one is refused with an error message, the connection is closed, and the
// replica's pool file and sequence number do not change.
func TestBadFrameRejected(t *testing.T) {
	replicaDir := fastDir(t)
	h := openPrimary(t, fastDir(t))
	// The tap reads what the replica sends the primary, as a peer on the
	// path would: plain TCP on both sides, so that it sees the frames.
	srv, addr := startServerWith(t, mirror.ServerOptions{Dir: replicaDir, Logger: testLogger(t), Insecure: true})
	tap := &ackTap{}
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{addr}, Logger: testLogger(t), Dial: tap.dial, Insecure: true})
	require.NoError(t, err)
	for i := range uint64(5) {
		require.NoError(t, commit(t, h, i+1))
	}
	flush(t, m)
	require.NoError(t, m.Close())
	// What a peer that watched the session knows: the chain value after
	// the last batch, from its acknowledgement.
	chain := tap.last(t)
	hdr, err := layout.DecodeHeader(h.Device().Bytes())
	require.NoError(t, err)
	epoch := m.Epoch()
	require.NoError(t, h.Close())

	idle := func() mirror.PoolStatus {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if st := srv.Status(); st[0].State == "idle" {
				return st[0]
			}
		}
		t.Fatal("replica session did not end")
		return mirror.PoolStatus{}
	}
	path := replicaFile(t, replicaDir)
	before := idle()
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	off := hdr.SlabOff
	line := bytes.Repeat([]byte{0xee}, 64)
	good := batchFrame(epoch, before.Seq+1, chain, off, line)

	for _, tc := range []struct {
		name  string
		frame []byte
		code  uint16
	}{
		{"payload bit flipped", flip(good, wire.HeaderSize+20), wire.CodeCorrupt},
		{"header bit flipped", flip(good, 18), wire.CodeCorrupt},
		{"truncated", good[:len(good)-10], wire.CodeCorrupt},
		{"out of sequence", batchFrame(epoch, before.Seq+2, chain, off, line), wire.CodeProtocol},
		{"outside the pool", batchFrame(epoch, before.Seq+1, chain, poolSize-32, line), wire.CodeProtocol},
		{"other epoch", batchFrame(epoch+1, before.Seq+1, chain, off, line), wire.CodeProtocol},
		{"not on the chain", batchFrame(epoch, before.Seq+1, wire.Chain{1}, off, line), wire.CodeDiverged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := dialFakePlain(t, addr, hdr.UUID, epoch)
			assert.Equal(t, before.Seq, fp.ready.Seq)
			_, err := fp.conn.Write(tc.frame)
			require.NoError(t, err)
			if tc.name == "truncated" {
				fp.conn.(interface{ CloseWrite() error }).CloseWrite()
			}
			f, err := fp.r.Next()
			require.NoError(t, err)
			require.Equal(t, wire.TypeError, f.Type)
			e, err := wire.DecodeError(f.Payload)
			require.NoError(t, err)
			assert.Equal(t, tc.code, e.Code, e.Message)
			_, err = fp.r.Next()
			assert.Equal(t, io.EOF, err, "the replica closes the connection")

			after := idle()
			assert.Equal(t, before.Seq, after.Seq, "nothing applied")
			assert.NotEmpty(t, after.LastError)
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(want, got), "the pool file changed")
		})
	}

	// The same batch, intact, is applied and acknowledged.
	fp := dialFakePlain(t, addr, hdr.UUID, epoch)
	_, err = fp.conn.Write(good)
	require.NoError(t, err)
	f, err := fp.r.Next()
	require.NoError(t, err)
	assert.Equal(t, wire.TypeAck, f.Type)
	assert.Equal(t, before.Seq+1, f.Seq)
	ackChain, err := wire.DecodeAck(f.Payload)
	require.NoError(t, err)
	assert.Equal(t, wire.NextChain(epoch, before.Seq+1, wire.FrameSum(good)), ackChain, "the ack carries the chain value after the batch")
	fp.conn.Close()
	idle()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, line, got[off:off+64])
}

// flip returns a copy of b with a bit of byte i inverted.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

// TestTakeOver connects a second primary while a first one's connection
// is open. One of the same epoch from another identity is refused as busy:
// only one primary holds an epoch, and the status of a replica tells
// anybody what it is. One of the same epoch and identity takes the pool
// over: it is the primary reconnecting after a failure the server has not
// noticed. So does one of a newer epoch, as after a primary's machine died
// without closing its connection. One of an older epoch is refused as
// stale.
func TestTakeOver(t *testing.T) {
	srv, addr := startServer(t, fastDir(t))
	uuid := [16]byte{7, 7, 7}
	first := dialFake(t, addr, uuid, 3)
	d := tlstesting.Default(t)
	other := d.ClientConfigFor(d.Issue(t, certs.Request{Name: "other-primary", Role: certs.RolePrimary}))
	refused := helloRefusedOver(t, dialAs(t, addr, other), uuid, 3)
	assert.Equal(t, wire.CodeBusy, refused.Code, refused.Message)

	again := dialFake(t, addr, uuid, 3)
	_, err := first.r.Next()
	assert.ErrorIs(t, err, io.EOF, "the first connection is closed")
	assert.Equal(t, wire.TypeReady, again.ready.Type)

	second := dialFake(t, addr, uuid, 4)
	_, err = again.r.Next()
	assert.ErrorIs(t, err, io.EOF, "the reconnected session is closed")
	assert.Equal(t, wire.TypeReady, second.ready.Type)
	st := srv.Status()
	require.Len(t, st, 1)
	assert.Equal(t, second.conn.LocalAddr().String(), st[0].Primary)

	refused = helloRefused(t, addr, uuid, 2)
	assert.Equal(t, wire.CodeStaleEpoch, refused.Code, refused.Message)
}

// TestTakeOverPlain: over plain TCP nobody's identity is known, so a
// hello of the connected primary's epoch is refused as busy, whoever
// sends it.
func TestTakeOverPlain(t *testing.T) {
	_, addr := startServerWith(t, mirror.ServerOptions{Dir: fastDir(t), Insecure: true})
	uuid := [16]byte{7, 7, 8}
	dialFakePlain(t, addr, uuid, 3)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	refused := helloRefusedOver(t, conn, uuid, 3)
	assert.Equal(t, wire.CodeBusy, refused.Code, refused.Message)
}

// helloRefused says hello and returns the error the server answers with.
func helloRefused(t *testing.T, addr string, uuid [16]byte, epoch uint64) wire.Error {
	t.Helper()
	return helloRefusedOver(t, dialServer(t, addr), uuid, epoch)
}

// helloRefusedOver is helloRefused over conn.
func helloRefusedOver(t *testing.T, conn net.Conn, uuid [16]byte, epoch uint64) wire.Error {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.Write(wire.AppendFrame(nil, wire.TypeHello, epoch, 0, wire.AppendHello(nil, wire.Hello{UUID: uuid, Size: poolSize})))
	require.NoError(t, err)
	f, err := wire.NewReader(conn).Next()
	require.NoError(t, err)
	require.Equal(t, wire.TypeError, f.Type)
	e, err := wire.DecodeError(f.Payload)
	require.NoError(t, err)
	return e
}

// TestPrimaryReconnects cuts a sync primary's connection on its own side
// only, as a network failure that the replica server does not notice
// leaves it: the server's session waits for its idle timeout (ten minutes
// here). The primary reconnects at once, and its next sync commit
// returns within the acknowledgement timeout, since a hello of the same
// epoch and identity takes over the silent session.
func TestPrimaryReconnects(t *testing.T) {
	h := openPrimary(t, fastDir(t))
	defer h.Close()
	srv, addr := startServerWith(t, secureServer(t, mirror.ServerOptions{Dir: fastDir(t), IdleTimeout: 10 * time.Minute}))
	var cut cuttableDialer
	m, err := mirror.Start(h, secure(t, mirror.Options{Replicas: []string{addr}, Mode: mirror.Sync, Dial: cut.dial,
		AckTimeout: 5 * time.Second, Logger: testLogger(t)}))
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, commit(t, h, 1))
	before := srv.Status()
	require.Len(t, before, 1)

	cut.cut()
	start := time.Now()
	require.NoError(t, commit(t, h, 2), "a sync commit after the primary's side of the connection broke")
	t.Logf("sync commit after the cut took %v", time.Since(start))
	after := srv.Status()
	require.Len(t, after, 1)
	assert.Greater(t, after[0].Seq, before[0].Seq, "the replica applied the commit after the cut")
}

// cuttableDialer dials replica servers through pipes it can cut on the
// primary's side while the connections to the servers stay open and
// silent.
type cuttableDialer struct {
	mu      sync.Mutex
	primary []net.Conn // the pipes' ends the forwarding goroutines use
	servers []net.Conn // kept open, and referenced, after a cut
}

func (d *cuttableDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	server, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	mine, theirs := net.Pipe()
	go io.Copy(server, theirs)
	go io.Copy(theirs, server)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.primary, d.servers = append(d.primary, theirs), append(d.servers, server)
	return mine, nil
}

// cut breaks every connection dialled so far on the primary's side only.
func (d *cuttableDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.primary {
		c.Close()
	}
	d.primary = nil
}
