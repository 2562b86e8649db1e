package ha_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/ha"
	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/mirror"
)

// percentile returns the p-th percentile of ds, in milliseconds.
func percentile(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, int(p*float64(len(s))))
	return float64(s[i]) / float64(time.Millisecond)
}

// BenchmarkFailover measures, for each run, the time from the SIGKILL of
// an application committing in sync mode to the first commit of the
// application restarted on the standby, split into detection (the kill
// seen by the guardian), save (open, role, ship, handoff), restore
// (install, check, open on the standby, which overlaps the end of the
// save) and restart (the application process started on the promoted
// pool, elected, replicating to a new replica, first commit
// acknowledged), itself split into the process's start (restart-process)
// and its becoming primary, a first whole copy to the new, empty replica
// included (restart-primary). The coordinator is the lease file.
// Run with -benchtime=20x for 20 failovers.
func BenchmarkFailover(b *testing.B) {
	const size = 64 << 20
	var detect, save, restore, restart, total, exec, elect []time.Duration
	for range b.N {
		coordDir, dir := b.TempDir(), fastDir(b)
		coord := newNode(b, "coord", coordDir).coord
		sb := runStandby(b, coord, filepath.Join(dir, "standby"), newRecorder(b))
		path := filepath.Join(dir, "app.pool")
		a := startAppProcess(b, path, coordDir, sb.replica, fmt.Sprintf("POOL_SIZE=%d", size))
		a.waitFor(b, "ack 100")

		killed := time.Now()
		require.NoError(b, a.cmd.Process.Signal(syscall.SIGKILL))
		a.lastAck(0)
		a.cmd.Wait()
		detected := time.Now()
		rep, err := newGuard(b, coord, path, sb, 10*time.Second, nil).Save(context.Background())
		require.NoError(b, err)
		saved := time.Now()
		prom := sb.wait(b)
		restored := time.Now()

		_, next := startReplica(b, filepath.Join(dir, "next"), nil)
		r := startAppProcess(b, prom.Path, coordDir, next, "NODE=b")
		r.waitFor(b, "started")
		started := time.Now()
		r.waitFor(b, "primary")
		primary := time.Now()
		r.waitFor(b, "ack 1")
		first := time.Now()
		r.cmd.Process.Kill()
		exec = append(exec, started.Sub(restored))
		elect = append(elect, primary.Sub(started))

		detect = append(detect, detected.Sub(killed))
		save = append(save, saved.Sub(detected))
		restore = append(restore, prom.Restore)
		restart = append(restart, first.Sub(restored))
		total = append(total, first.Sub(killed))
		b.Logf("failover %v: detect %v save %v (open %v ship %v, %d bytes) restore %v restart %v (process %v, primary %v, first commit %v)",
			first.Sub(killed), detected.Sub(killed), saved.Sub(detected), rep.Open, rep.Ship, rep.Handoff.Bytes, prom.Restore, first.Sub(restored),
			started.Sub(restored), primary.Sub(started), first.Sub(primary))
	}
	for _, m := range []struct {
		name string
		ds   []time.Duration
	}{{"total", total}, {"detect", detect}, {"save", save}, {"restore", restore}, {"restart", restart}, {"restart-process", exec}, {"restart-primary", elect}} {
		b.ReportMetric(percentile(m.ds, 0.5), "p50-"+m.name+"-ms")
		b.ReportMetric(percentile(m.ds, 0.99), "p99-"+m.name+"-ms")
	}
}

// BenchmarkPowerLossSave measures a guardian's save of a 1 GiB pool of
// which 1% changed since the standby's last batch (the link went down):
// the time from the call to the handoff accepted, and the bytes shipped.
// Each iteration saves twice, on fresh pools: with the primary's
// dirty-chunk record (listed), and without it (hashes: the delta by
// chunk hashes of the whole pool, and the whole pool hashed for the
// handoff), the anchor. The listed save's time is split into reading the
// record, opening the pool, shipping and handing off.
func BenchmarkPowerLossSave(b *testing.B) {
	var listed, hashes []ha.SaveReport
	for range b.N {
		for _, record := range []bool{true, false} {
			b.StopTimer()
			rep := powerLossSave(b, record, nil, 1<<30)
			b.StartTimer()
			if record {
				require.True(b, rep.Listed, rep.Fallback)
				listed = append(listed, rep)
			} else {
				hashes = append(hashes, rep)
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var l, h ha.SaveReport
	for i := range listed {
		b.Logf("listed: %v (record %v open %v ship %v hash %v send %v), %d bytes; hashes: %v (open %v ship %v hash %v send %v), %d bytes",
			listed[i].Total, listed[i].Record, listed[i].Open, listed[i].Ship, listed[i].Hash, listed[i].Send, listed[i].Handoff.Bytes,
			hashes[i].Total, hashes[i].Open, hashes[i].Ship, hashes[i].Hash, hashes[i].Send, hashes[i].Handoff.Bytes)
		l.Total, l.Record, l.Open, l.Ship, l.Send = l.Total+listed[i].Total, l.Record+listed[i].Record, l.Open+listed[i].Open, l.Ship+listed[i].Ship, l.Send+listed[i].Send
		l.Handoff.Bytes += listed[i].Handoff.Bytes
		h.Total += hashes[i].Total
		h.Handoff.Bytes += hashes[i].Handoff.Bytes
	}
	n := time.Duration(len(listed))
	b.ReportMetric(ms(l.Total/n), "save-ms")
	b.ReportMetric(ms(l.Record/n), "record-ms")
	b.ReportMetric(ms(l.Open/n), "open-ms")
	b.ReportMetric(ms(l.Ship/n), "ship-ms")
	b.ReportMetric(ms(l.Send/n), "handoff-ms")
	b.ReportMetric(float64(l.Handoff.Bytes)/float64(n)/(1<<20), "MiB-shipped")
	b.ReportMetric(ms(h.Total/n), "hashes-save-ms")
	b.ReportMetric(float64(h.Handoff.Bytes)/float64(n)/(1<<20), "hashes-MiB-shipped")
	b.ReportMetric(float64(l.Total)/float64(h.Total), "listed/hashes")
}

// BenchmarkPowerLossSaveSealed is BenchmarkPowerLossSave's listed save
// of a sealed 256 MiB pool, against the same save of a plain one in the
// same loop: the sealed save opens (decrypts and digests) the whole pool
// and ships the sealed chunks, twice the bytes.
func BenchmarkPowerLossSaveSealed(b *testing.B) {
	var sealed, plain time.Duration
	var sealedOpen, sealedBytes int64
	for range b.N {
		b.StopTimer()
		s := powerLossSave(b, true, bytes.Repeat([]byte{7}, 32), 256<<20)
		p := powerLossSave(b, true, nil, 256<<20)
		b.StartTimer()
		require.True(b, s.Listed, s.Fallback)
		require.True(b, p.Listed, p.Fallback)
		b.Logf("sealed: %v (open %v ship %v send %v), %d bytes; plain: %v (open %v ship %v), %d bytes",
			s.Total, s.Open, s.Ship, s.Send, s.Handoff.Bytes, p.Total, p.Open, p.Ship, p.Handoff.Bytes)
		sealed, plain = sealed+s.Total, plain+p.Total
		sealedOpen, sealedBytes = sealedOpen+int64(s.Open), sealedBytes+s.Handoff.Bytes
	}
	n := float64(b.N)
	b.ReportMetric(float64(sealed)/n/1e6, "sealed-save-ms")
	b.ReportMetric(float64(sealedOpen)/n/1e6, "sealed-open-ms")
	b.ReportMetric(float64(sealedBytes)/n/(1<<20), "sealed-MiB-shipped")
	b.ReportMetric(float64(plain)/n/1e6, "plain-save-ms")
	b.ReportMetric(float64(sealed)/float64(plain), "sealed/plain")
}

// powerLossSave makes a primary of size bytes, sealed with key if set,
// whose standby took its first commits, changes 1% of it with the link
// down, stops it and saves it, timing the save alone. With record unset
// the primary keeps no dirty-chunk record.
func powerLossSave(b *testing.B, record bool, key []byte, size int64) ha.SaveReport {
	changed := int(size / 100)
	type block struct{ B [4096]byte }
	dir := fastDir(b)
	// The lease outlives the slow commits of a large pool, and the
	// standby waits for the guardian rather than promote on the
	// application's resignation.
	coord, err := ha.NewLeaseFile(b.TempDir(), ha.LeaseFileOptions{TTL: 10 * time.Second})
	require.NoError(b, err)
	defer coord.Close()
	sb := runStandbyOpts(b, ha.StandbyOptions{Coordinator: coord, Logger: newRecorder(b).logger(), Grace: time.Minute, Server: mirror.ServerOptions{Dir: filepath.Join(dir, "standby")}, Key: key})
	path := filepath.Join(dir, "app.pool")
	h, err := heap.Open(path, &heap.Options{Size: size, Key: key})
	require.NoError(b, err)
	p, err := ha.StartPrimary(context.Background(), h, ha.PrimaryOptions{Coordinator: coord, Pool: "orders", Node: "a", Mirror: syncMirror(b, sb.replica, nil), NoDirtyRecord: !record})
	require.NoError(b, err)
	require.NoError(b, p.Mirror().Close())
	for range changed / (64 * 4096) {
		require.NoError(b, h.Update(func(tx *heap.Tx) error {
			for range 64 {
				blk, err := heap.New[block](tx)
				if err != nil {
					return err
				}
				blk.B[0] = 1
			}
			return nil
		}))
	}
	require.NoError(b, p.Term().Resign(context.Background()))
	require.NoError(b, h.Close())
	g, err := ha.NewGuard(ha.GuardOptions{
		PoolPath: path, Pool: "orders", Node: "a", Coordinator: coord,
		Standby: sb.replica, Handoff: sb.handoff, TLS: tlstesting.Default(b).PrimaryConfig(),
		Budget: time.Minute, Logger: newRecorder(b).logger(), Key: key,
	})
	require.NoError(b, err)
	b.StartTimer()
	rep, err := g.Save(context.Background())
	b.StopTimer()
	require.NoError(b, err)
	sb.wait(b)
	return rep
}

// BenchmarkLeaseCheck measures the commit path of a heap bound to a
// term against one without a lease: the check is a clock read.
func BenchmarkLeaseCheck(b *testing.B) {
	for _, bound := range []bool{false, true} {
		b.Run(fmt.Sprintf("lease=%v", bound), func(b *testing.B) {
			h, err := heap.Open(filepath.Join(fastDir(b), "p.pool"), &heap.Options{Size: 8 << 20})
			require.NoError(b, err)
			defer h.Close()
			if bound {
				c, err := ha.NewLeaseFile(b.TempDir(), ha.LeaseFileOptions{})
				require.NoError(b, err)
				defer c.Close()
				term, err := c.Campaign(context.Background(), ha.Candidate{Pool: "p", Node: "a"})
				require.NoError(b, err)
				defer term.Fence(h)()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := increment(h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDirtyRecordCommit measures what the dirty-chunk record costs a
// commit: a primary whose link to the standby is down (its mirror
// closed, so that no round trip hides the cost), with and without the
// record; compare the two over -count runs (benchstat).
func BenchmarkDirtyRecordCommit(b *testing.B) {
	for _, record := range []bool{false, true} {
		b.Run(fmt.Sprintf("record=%v", record), func(b *testing.B) {
			coord, err := ha.NewLeaseFile(b.TempDir(), ha.LeaseFileOptions{TTL: time.Minute})
			require.NoError(b, err)
			defer coord.Close()
			_, addr := startReplica(b, filepath.Join(b.TempDir(), "replica"), nil)
			h, err := heap.Open(filepath.Join(fastDir(b), "p.pool"), &heap.Options{Size: 64 << 20})
			require.NoError(b, err)
			defer h.Close()
			p, err := ha.StartPrimary(context.Background(), h, ha.PrimaryOptions{Coordinator: coord, Pool: "p", Node: "a", Mirror: syncMirror(b, addr, nil), NoDirtyRecord: !record})
			require.NoError(b, err)
			require.NoError(b, p.Mirror().Close())
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := increment(h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
