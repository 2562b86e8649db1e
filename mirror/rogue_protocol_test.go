package mirror_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
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

// TestRogueRewind presents the epoch of the replica's primary and sends a
// snapshot taken after batch 0 to a replica at batch 15 of that epoch:
// installed, it would lose acknowledged commits at failover. It is
// refused, and the real primary carries on.
func TestRogueRewind(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 15, mirror.Options{})
	epoch, uuid := m.Epoch(), h.UUID()
	require.NoError(t, m.Close())
	before := waitIdle(t, srv.Server, uuid)
	require.GreaterOrEqual(t, before.Seq, uint64(15))

	image := h.Device().Bytes()
	r := rogueHello(t, srv.addr, uuid, epoch, poolSize)
	ready := r.next()
	require.Equal(t, wire.TypeReady, ready.Type)
	assert.Equal(t, before.Seq, ready.Seq)
	go r.conn.Write(bytes.Join([][]byte{
		wire.AppendFrame(nil, wire.TypeSnapBegin, epoch, 0, wire.AppendSnapBegin(nil, wire.SnapBegin{UUID: uuid, Size: poolSize})),
		wire.AppendFrame(nil, wire.TypeSnapChunk, epoch, 0, append(wire.AppendSnapChunkHeader(nil, 0), image[:wire.MaxSnapChunk]...)),
		wire.AppendFrame(nil, wire.TypeSnapEnd, epoch, 0, wire.AppendSnapEnd(nil, wire.SnapEnd{ConsistentAt: 1})),
		wire.AppendFrame(nil, wire.TypeBatch, epoch, 1, wire.AppendBatchHeader(nil, wire.Chain{}, 0)),
	}, nil))
	assert.Contains(t, r.refused(wire.CodeProtocol), "never moves a replica back")
	assert.Equal(t, before.Seq, waitIdle(t, srv.Server, uuid).Seq)

	m = replicate(t, h, srv.addr, 15, 17, mirror.Options{})
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())
	requireConverged(t, dir, h.Device().Bytes(), 17)
}

// TestRogueEpochJump says hello with epoch 2^64-1, which would lock every
// real primary out: it is refused, and the real primary's next
// incarnation is served. An operator can reset the fencing on purpose.
func TestRogueEpochJump(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 3, mirror.Options{})
	epoch, uuid := m.Epoch(), h.UUID()
	require.NoError(t, m.Close())

	r := rogueHello(t, srv.addr, uuid, math.MaxUint64, poolSize)
	assert.Contains(t, r.refused(wire.CodeLimit), "reset-fencing")
	assert.Equal(t, epoch, waitIdle(t, srv.Server, uuid).SeenEpoch)

	m = replicate(t, h, srv.addr, 3, 5, mirror.Options{})
	require.NoError(t, m.Close())
	assert.Equal(t, epoch+1, poolStatus(t, srv.Server, uuid).SeenEpoch)

	// The operator accepts a primary far ahead, on purpose.
	require.NoError(t, srv.Close())
	require.NoError(t, mirror.ResetFencing(dir, hexUUID(uuid), 0))
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	st := poolStatus(t, srv.Server, uuid)
	assert.Equal(t, [3]uint64{0, 0, 0}, [3]uint64{st.SeenEpoch, st.Epoch, st.Seq})
	r = rogueHello(t, srv.addr, uuid, 1<<40, poolSize)
	assert.Equal(t, wire.TypeReady, r.next().Type)
}

// TestRogueSameEpochTakeover presents the epoch of the connected primary,
// which status hands out, while sync commits are in flight: it used to
// take the session over and let a commit return that no replica held. A
// peer with a certificate of its own is refused as busy (one with the
// primary's identity is the primary reconnecting: TestTakeOver); every
// commit reaches the replica.
func TestRogueSameEpochTakeover(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 3, mirror.Options{})
	epoch, uuid := m.Epoch(), h.UUID()
	done := make(chan error, 1)
	go func() {
		var err error
		for i := uint64(4); i <= 20 && err == nil; i++ {
			err = h.Update(func(tx *heap.Tx) error { return step(tx, i) })
		}
		done <- err
	}()
	d := tlstesting.Default(t)
	other := d.ClientConfigFor(d.Issue(t, certs.Request{Name: "rogue-primary", Role: certs.RolePrimary}))
	for range 3 {
		r := dialRogueAs(t, srv.addr, other)
		r.hello(uuid, epoch, poolSize)
		assert.Contains(t, r.refused(wire.CodeBusy), "is connected")
	}
	require.NoError(t, <-done)
	flush(t, m)
	st := m.Status()
	assert.Equal(t, 1, st[0].Snapshots, "the primary's session was never taken")
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())
	requireConverged(t, dir, h.Device().Bytes(), 20)
}

// TestRogueDivergedHistory has a peer that watched a session (and so knows
// the chain value) extend the replica's history while the primary
// reconnects. The primary then finds the replica's batch is not its own:
// the sync commit in flight fails rather than count the rogue's
// acknowledgement, and both sides report the divergence.
func TestRogueDivergedHistory(t *testing.T) {
	// A peer that watches a session learns the chain value only over plain
	// TCP: the whole test runs insecure.
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir, Insecure: true})
	h := openPrimary(t, fastDir(t))
	hdr, err := layout.DecodeHeader(h.Device().Bytes())
	require.NoError(t, err)
	tap := &ackTap{}
	m := replicate(t, h, srv.addr, 0, 3, mirror.Options{Dial: tap.dial, RetryInterval: 500 * time.Millisecond, AckTimeout: 5 * time.Second, Insecure: true})
	epoch, uuid := m.Epoch(), h.UUID()
	chain := tap.last(t)
	tap.cut()

	var r *rogue
	var ready wire.Frame
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		r = dialRoguePlain(t, srv.addr)
		r.hello(uuid, epoch, poolSize)
		if ready = r.next(); ready.Type == wire.TypeReady {
			break
		}
		require.True(t, time.Now().Before(deadline), "the server never dropped the cut session")
	}
	r.send(batchFrame(epoch, ready.Seq+1, chain, hdr.SlabOff, bytes.Repeat([]byte{0xee}, 64)))
	ack := r.next()
	require.Equal(t, wire.TypeAck, ack.Type, "a peer that knows the chain value extends the history")
	r.conn.Close()

	err = commit(t, h, 4)
	require.ErrorIs(t, err, mirror.ErrDiverged)
	t.Logf("commit: %v", err)
	assert.Equal(t, "refused", m.Status()[0].State)
	require.NoError(t, m.Close())
	assert.Contains(t, waitIdle(t, srv.Server, uuid).LastError, "diverges")
}

// TestRogueLostJournal damages and deletes a replica's journal, then its
// fencing state: the epoch seen survives the journal, one damaged copy of
// the fencing state is logged and the other used, and with both lost the
// pool is set aside, not reset, until an operator resets it; the other
// pools are served meanwhile.
func TestRogueLostJournal(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 2, mirror.Options{})
	first := m.Epoch()
	require.NoError(t, m.Close())
	m = replicate(t, h, srv.addr, 2, 4, mirror.Options{})
	epoch, uuid := m.Epoch(), h.UUID()
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())
	base := filepath.Join(dir, hexUUID(uuid))

	require.NoError(t, os.WriteFile(base+".journal.0", bytes.Repeat([]byte("junk"), 40), 0o644))
	require.NoError(t, os.Remove(base+".journal.1"))
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	assert.Contains(t, srv.log.String(), "invalid journal record")
	assert.Contains(t, srv.log.String(), "journal is lost")
	st := poolStatus(t, srv.Server, uuid)
	assert.Equal(t, epoch, st.SeenEpoch, "the epoch seen survives the journal")
	r := rogueHello(t, srv.addr, uuid, first, poolSize)
	assert.Contains(t, r.refused(wire.CodeStaleEpoch), "older than epoch")
	m = replicate(t, h, srv.addr, 4, 5, mirror.Options{})
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())

	fence, err := os.ReadFile(base + ".fence")
	require.NoError(t, err)
	fence[20] ^= 1
	require.NoError(t, os.WriteFile(base+".fence", fence, 0o644))
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	assert.Contains(t, srv.log.String(), "fencing state is damaged")
	assert.Equal(t, epoch+1, poolStatus(t, srv.Server, uuid).SeenEpoch)
	require.NoError(t, srv.Close())

	require.NoError(t, os.Remove(base+".fence"))
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	st = poolStatus(t, srv.Server, uuid)
	assert.Equal(t, "failed", st.State)
	assert.Contains(t, st.LastError, "reset-fencing")
	r = rogueHello(t, srv.addr, uuid, epoch+1, poolSize)
	r.refused(wire.CodeUnavailable)
	other := openPrimary(t, fastDir(t))
	require.NoError(t, replicate(t, other, srv.addr, 0, 2, mirror.Options{}).Close())
	require.NoError(t, srv.Close())

	require.NoError(t, mirror.ResetFencing(dir, hexUUID(uuid), epoch+1))
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	r = rogueHello(t, srv.addr, uuid, first, poolSize)
	r.refused(wire.CodeStaleEpoch)
	require.NoError(t, replicate(t, h, srv.addr, 5, 6, mirror.Options{}).Close())
	require.NoError(t, srv.Close())
	replica, err := os.ReadFile(base + ".pool")
	require.NoError(t, err)
	requireSameData(t, h.Device().Bytes(), replica)
	assert.Equal(t, uint64(6), checkReplica(t, base+".pool"))
}

// TestRoguePoolSetAside makes one pool of a replica fail to open: the
// server starts, reports it, refuses it, and serves the other pools.
func TestRoguePoolSetAside(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	a, b := openPrimary(t, fastDir(t)), openPrimary(t, fastDir(t))
	require.NoError(t, replicate(t, a, srv.addr, 0, 2, mirror.Options{}).Close())
	require.NoError(t, replicate(t, b, srv.addr, 0, 2, mirror.Options{}).Close())
	require.NoError(t, srv.Close())
	path := filepath.Join(dir, hexUUID(a.UUID())+".pool")
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Mkdir(path, 0o755))

	srv = serve(t, mirror.ServerOptions{Dir: dir})
	st := poolStatus(t, srv.Server, a.UUID())
	assert.Equal(t, "failed", st.State)
	assert.NotEmpty(t, st.LastError)
	r := rogueHello(t, srv.addr, a.UUID(), 100, poolSize)
	r.refused(wire.CodeUnavailable)
	require.NoError(t, replicate(t, b, srv.addr, 2, 4, mirror.Options{}).Close())
	srv.stillServing(t)
	require.NoError(t, srv.Close())

	// A pool file of 0 bytes, as an old server installed from a rogue's
	// snapshot: the server starts and the next primary replaces it.
	bPath := filepath.Join(dir, hexUUID(b.UUID())+".pool")
	require.NoError(t, os.Truncate(bPath, 0))
	srv = serve(t, mirror.ServerOptions{Dir: dir})
	st = poolStatus(t, srv.Server, b.UUID())
	assert.Equal(t, "damaged", st.State)
	assert.Contains(t, st.LastError, "pool size 0")
	require.NoError(t, replicate(t, b, srv.addr, 4, 5, mirror.Options{}).Close())
	require.NoError(t, srv.Close())
	replica, err := os.ReadFile(bPath)
	require.NoError(t, err)
	requireSameData(t, b.Device().Bytes(), replica)
}

// TestRogueBitRot damages a replica's pool file while the server is
// stopped, and again while it runs: verification at start and a scrub
// notice it, and the next primary sends a copy over it.
func TestRogueBitRot(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	hdr, err := layout.DecodeHeader(h.Device().Bytes())
	require.NoError(t, err)
	require.NoError(t, replicate(t, h, srv.addr, 0, 3, mirror.Options{}).Close())
	require.NoError(t, srv.Close())
	path := replicaFile(t, dir)
	rot := func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		require.NoError(t, err)
		defer f.Close()
		b := make([]byte, 1)
		_, err = f.ReadAt(b, int64(hdr.SlabOff)+8)
		require.NoError(t, err)
		b[0] ^= 0x40
		_, err = f.WriteAt(b, int64(hdr.SlabOff)+8)
		require.NoError(t, err)
	}
	rot()

	srv = serve(t, mirror.ServerOptions{Dir: dir})
	st := poolStatus(t, srv.Server, h.UUID())
	assert.Equal(t, "damaged", st.State)
	assert.Contains(t, st.LastError, "verification")
	require.NoError(t, replicate(t, h, srv.addr, 3, 4, mirror.Options{}).Close())
	waitIdle(t, srv.Server, h.UUID())
	res := srv.Scrub()
	require.Len(t, res, 1)
	assert.True(t, res[0].OK, "%v", res[0].Problems)

	rot()
	res = srv.Scrub()
	require.Len(t, res, 1)
	assert.False(t, res[0].OK)
	assert.NotEmpty(t, res[0].Problems)
	assert.Equal(t, "damaged", waitIdle(t, srv.Server, h.UUID()).State)
	require.NoError(t, replicate(t, h, srv.addr, 4, 5, mirror.Options{}).Close())
	require.NoError(t, srv.Close())
	requireConverged(t, dir, h.Device().Bytes(), 5)
}

// TestRogueChunkHashes asks for the hashes of a replica's chunks, which
// confirm guesses of whole chunks: a peer of the replica's own epoch gets
// none; one of a newer epoch gets them, unless the server is told never
// to hand them out.
func TestRogueChunkHashes(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 2, mirror.Options{})
	epoch, uuid := m.Epoch(), h.UUID()
	require.NoError(t, m.Close())
	waitIdle(t, srv.Server, uuid)
	hashes := func(srv *served, epoch uint64) int {
		r := rogueHello(t, srv.addr, uuid, epoch, poolSize)
		f := r.next()
		require.Equal(t, wire.TypeReady, f.Type)
		ready, err := wire.DecodeReady(f.Payload)
		require.NoError(t, err)
		r.conn.Close()
		waitIdle(t, srv.Server, uuid)
		return len(ready.Hashes)
	}
	assert.Zero(t, hashes(srv, epoch))
	assert.Equal(t, poolSize/wire.HashChunk, hashes(srv, epoch+1))
	require.NoError(t, srv.Close())
	srv = serve(t, mirror.ServerOptions{Dir: dir, NoChunkHashes: true})
	assert.Zero(t, hashes(srv, epoch+2))
}

// TestRogueGrowth says hello in the replica's own epoch with sizes that a
// growth would give, and some that no pool has: a size that is not a
// multiple of 4096 is refused and the copy keeps its size, as is a growth
// beyond the server's cap (ErrLimit). The real primary then carries
// on, and the replica converges.
func TestRogueGrowth(t *testing.T) {
	dir := fastDir(t)
	srv := serve(t, mirror.ServerOptions{Dir: dir, MaxPoolSize: 4 * poolSize})
	h := openPrimary(t, fastDir(t))
	m := replicate(t, h, srv.addr, 0, 5, mirror.Options{})
	epoch, uuid := m.Epoch(), h.UUID()
	require.NoError(t, m.Close())
	before := waitIdle(t, srv.Server, uuid)
	size := func() int64 {
		fi, err := os.Stat(replicaFile(t, dir))
		require.NoError(t, err)
		return fi.Size()
	}

	r := rogueHello(t, srv.addr, uuid, epoch, 2*poolSize+100)
	assert.Contains(t, r.refused(wire.CodeProtocol), "not a multiple of 4096")
	assert.EqualValues(t, poolSize, size())

	r = rogueHello(t, srv.addr, uuid, epoch, 8*poolSize)
	r.refused(wire.CodeLimit)
	assert.EqualValues(t, poolSize, size())
	assert.Equal(t, before.Seq, waitIdle(t, srv.Server, uuid).Seq)

	m = replicate(t, h, srv.addr, 5, 7, mirror.Options{})
	require.NoError(t, m.Close())
	require.NoError(t, srv.Close())
	requireConverged(t, dir, h.Device().Bytes(), 7)
}
