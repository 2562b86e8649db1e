package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pmemgo/pmemgo/device"
)

// mapper is the device.Mapper of a remote pool: f is the local backup.
type mapper struct{ s *session }

// Map maps size bytes of anonymous memory, registers them with a
// userfaultfd and starts the agent that resolves their faults.
func (m *mapper) Map(f *os.File, size int, req device.MapRequest) (device.Device, error) {
	s := m.s
	var z *sealing
	region := uint64(size)
	if s.opts.Heap.Key != nil {
		var err error
		if z, _, err = newSealing(s.opts.Heap.Key, f); err != nil {
			return nil, err
		}
		region = recordOff(uint64(size))
	}
	if region != s.size {
		return nil, fmt.Errorf("map a pool of %d bytes from region %s of %d: %w", size, s.name, s.size, ErrProtocol)
	}
	mem, unmap, err := device.MapAnonymous(size, req)
	if err != nil {
		return nil, err
	}
	d := &remoteDevice{s: s, mem: mem, unmap: unmap, backup: f, uffd: -1, stale: map[uint64]struct{}{},
		cap: int(s.opts.LocalCap / PageSize), stop: make(chan struct{}), watched: make(chan struct{}), log: logger(s.opts.Heap.Logger), seal: z}
	d.base = uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	if d.uffd, err = newUffd(d.base, size); err != nil {
		_ = unmap()
		return nil, err
	}
	if d.agent, err = d.startKeeper(false); err != nil {
		unix.Close(d.uffd)
		_ = unmap()
		return nil, err
	}
	go d.watch(d.agent)
	return d, nil
}

// span is a line-aligned range [lo, hi) flushed since the last fence.
type span struct{ lo, hi int }

// remoteDevice is the Device of a remote pool. A fence writes the lines
// flushed since the last one to the backup (fdatasync'ed) and to the node
// (durable there when it acknowledges) before returning. When the node
// does not answer within RemoteTimeout it is suspect: commits go to the
// backup only, the pages they touched are recorded in the sidecar as
// stale on the node, and a background loop hands them to the node once
// it answers.
type remoteDevice struct {
	s      *session
	mem    []byte
	unmap  func() error // unmaps mem
	base   uintptr
	backup *os.File
	uffd   int
	log    *slog.Logger
	// seal seals the lines of a sealed pool; nil for a plain one.
	seal *sealing

	// agentMu guards the fault agent, which watch replaces when it dies.
	agentMu       sync.Mutex
	agent         *agentProc
	agentErr      error
	stopping      bool
	watched       chan struct{}
	agentRestarts atomic.Uint64

	flushed []span
	subs    subscribers

	// mu orders fences, the resynchronisation and Close.
	mu      sync.Mutex
	suspect bool
	stale   map[uint64]struct{}
	resync  bool
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  bool

	cap       int
	hand      int
	lastEvict time.Time
	stats     DeviceStats
}

// DeviceStats counts what a remote device did.
type DeviceStats struct {
	// LinesWrittenBack counts the 64-byte lines fences sent.
	LinesWrittenBack uint64
	// PagesWrittenBack counts the distinct 4 KiB pages of each fence's
	// lines: what tracking dirty data by page would have sent.
	PagesWrittenBack uint64
	// Fences counts the fences that wrote something.
	Fences uint64
	// SuspectFences counts the fences that reached only the backup.
	SuspectFences uint64
	// Evicted counts clean pages dropped to stay under LocalCap.
	Evicted uint64
	// AgentRestarts counts the fault agent's processes started again
	// after they died.
	AgentRestarts uint64
}

// Stats returns the counters of the remote device d, or false if d is
// not one.
func Stats(d device.Device) (DeviceStats, bool) {
	rd, ok := d.(*remoteDevice)
	if !ok {
		return DeviceStats{}, false
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	st := rd.stats
	st.AgentRestarts = rd.agentRestarts.Load()
	rd.agentMu.Lock()
	if k := rd.agent; k != nil {
		st.AgentRestarts += k.restarts.Load()
	}
	rd.agentMu.Unlock()
	return st, true
}

// Bytes returns the mapping.
func (d *remoteDevice) Bytes() []byte { return d.mem }

// Flush records [off, off+n), widened to lines, for the next fence.
func (d *remoteDevice) Flush(off, n int) {
	if off < 0 {
		n, off = n+off, 0
	}
	if n <= 0 || off >= len(d.mem) || d.closed {
		return
	}
	lo, hi := off&^(LineSize-1), min((off+n+LineSize-1)&^(LineSize-1), len(d.mem))
	if k := len(d.flushed); k > 0 && d.flushed[k-1].hi >= lo && d.flushed[k-1].lo <= hi {
		d.flushed[k-1] = span{min(lo, d.flushed[k-1].lo), max(hi, d.flushed[k-1].hi)}
	} else {
		d.flushed = append(d.flushed, span{lo, hi})
	}
	d.subs.writeBack(lo, hi-lo)
}

// Fence makes every range flushed since the last fence durable in the
// backup and, unless the node is suspect, on the node.
func (d *remoteDevice) Fence() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return device.ErrClosed
	}
	if err := d.agentFailure(); err != nil {
		return err
	}
	spans := d.flushed
	d.flushed = d.flushed[:0]
	if len(spans) == 0 {
		d.subs.fence()
		return nil
	}
	runs := make([]run, len(spans))
	for i, sp := range spans {
		runs[i] = run{off: uint64(sp.lo), data: d.mem[sp.lo:sp.hi]}
		d.stats.LinesWrittenBack += uint64((sp.hi - sp.lo) / LineSize)
	}
	for _, pr := range pageRanges(runs) {
		d.stats.PagesWrittenBack += (pr[1] + PageSize - 1 - pr[0]) / PageSize
	}
	d.stats.Fences++
	if d.seal != nil {
		runs = d.seal.sealRuns(runs)
	}
	var node chan error
	if !d.suspect {
		// The payload is a copy, encoded before the backup is written, so
		// that node and backup get the same bytes.
		var payloads [][]byte
		bytes := 0
		for _, b := range batches(runs, MaxWrite) {
			payloads = append(payloads, appendWrite(make([]byte, 0, writeSize(b)), d.s.region, b))
			bytes += len(payloads[len(payloads)-1])
		}
		// A large commit gets the time it takes to send at 100 MB/s on top
		// of the timeout, so that its size alone does not make the node
		// suspect.
		timeout := d.s.opts.RemoteTimeout + time.Duration(bytes)*10*time.Nanosecond
		node = make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var err error
			for _, p := range payloads {
				if err = d.s.cl.writePayload(ctx, d.s.epoch, p); err != nil {
					break
				}
			}
			node <- err
		}()
	}
	if err := d.writeBackup(runs); err != nil {
		if node != nil {
			<-node
		}
		return err
	}
	if node != nil {
		if err := <-node; err != nil {
			d.suspect = true
		}
	}
	if d.suspect {
		d.stats.SuspectFences++
		if err := d.markStale(runs); err != nil {
			return err
		}
	}
	d.subs.fence()
	d.evict()
	return nil
}

// batches splits runs into batches whose payloads fit in limit bytes,
// splitting runs that do not fit alone. A fence is durable on the node
// once every batch is acknowledged; like stores before a fence, they may
// reach the node in part if the client dies in between.
func batches(runs []run, limit int) [][]run {
	const perRun = 12
	var out [][]run
	var cur []run
	size := 8
	for _, r := range runs {
		for len(r.data) > 0 {
			room := limit - size - perRun
			if room < LineSize && len(cur) > 0 {
				out, cur, size = append(out, cur), nil, 8
				continue
			}
			room = max(room, LineSize)
			n := min(len(r.data), room&^(LineSize-1))
			cur = append(cur, run{off: r.off, data: r.data[:n]})
			size += perRun + n
			r = run{off: r.off + uint64(n), data: r.data[n:]}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// writeBackup writes runs to the backup and waits until they are durable.
func (d *remoteDevice) writeBackup(runs []run) error {
	for _, r := range runs {
		if _, err := d.backup.WriteAt(r.data, int64(r.off)); err != nil {
			return fmt.Errorf("backup %s: %w", d.backup.Name(), err)
		}
	}
	if err := unix.Fdatasync(int(d.backup.Fd())); err != nil {
		return fmt.Errorf("backup %s: fdatasync: %w", d.backup.Name(), err)
	}
	return nil
}

// markStale records the pages of runs as missing on the node, durably,
// and starts the loop that hands them over.
func (d *remoteDevice) markStale(runs []run) error {
	var pages []uint64
	for _, r := range runs {
		for p := r.off / PageSize; p*PageSize < r.off+uint64(len(r.data)); p++ {
			pages = append(pages, p)
		}
	}
	return d.addStale(pages)
}

// addStale records pages, region page indexes, as missing on the node,
// durably, and starts the loop that hands them over. d.mu is held.
func (d *remoteDevice) addStale(pages []uint64) error {
	for _, p := range pages {
		d.stale[p] = struct{}{}
	}
	d.s.side.setStale(d.stale)
	if err := d.s.side.save(); err != nil {
		return fmt.Errorf("backup state: %w", err)
	}
	if !d.resync {
		d.resync = true
		d.wg.Add(1)
		go d.resyncLoop()
	}
	return nil
}

// repair hands the node the backup's copy of the pool page at offset arg
// (decimal), which the agent found damaged on the node and good in the
// backup, as it hands over the commits the node missed.
func (d *remoteDevice) repair(arg string) {
	off, err := strconv.ParseUint(arg, 10, 64)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil || d.closed || off >= uint64(len(d.mem)) {
		return
	}
	pages := []uint64{off / PageSize}
	if d.seal != nil {
		// A page's records fill two pages of the region.
		first := recordOff(off&^(PageSize-1)) / PageSize
		pages = []uint64{first, first + 1}
	}
	if err := d.addStale(pages); err != nil {
		d.log.Warn("pmemgo remote: cannot schedule the repair of the node's copy", "pool", d.s.name, "offset", off, "err", err)
	}
}

// resyncLoop hands the stale pages to the node once it answers, and then
// clears the suspicion.
func (d *remoteDevice) resyncLoop() {
	defer d.wg.Done()
	tick := time.NewTicker(max(d.s.opts.RemoteTimeout, 20*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-tick.C:
		}
		if d.tryResync() {
			return
		}
	}
}

// tryResync makes one attempt. Commits go on while it probes the node,
// and wait while it hands the pages over, so that the pages it reads from
// the backup are the latest committed.
func (d *remoteDevice) tryResync() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 4*d.s.opts.RemoteTimeout)
	defer cancel()
	// Only this goroutine replaces d.s.cl, so it may read it unlocked.
	if !d.s.answers(ctx) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.s.reconnect(ctx); err != nil {
		return false
	}
	pages := make([]uint64, 0, len(d.stale))
	for p := range d.stale {
		pages = append(pages, p)
	}
	// As for a fence, the pages get the time they take at 100 MB/s.
	push, cancelPush := context.WithTimeout(context.Background(),
		4*d.s.opts.RemoteTimeout+time.Duration(len(pages))*PageSize*10*time.Nanosecond)
	defer cancelPush()
	if err := d.s.pushPages(push, pages); err != nil {
		return false
	}
	d.stale = map[uint64]struct{}{}
	d.s.side.Stale = nil
	if err := d.s.side.save(); err != nil {
		return false
	}
	d.suspect, d.resync = false, false
	return true
}

// Resynced reports whether the remote device d has handed every commit to
// its node.
func Resynced(d device.Device) bool {
	rd, ok := d.(*remoteDevice)
	if !ok {
		return false
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return !rd.suspect && len(rd.stale) == 0
}

// Subscribe registers s for the write-backs and fences from now on.
func (d *remoteDevice) Subscribe(s device.Subscriber) (cancel func()) { return d.subs.add(s) }

// Close stops the agent and unmaps the pool. What was not fenced is lost;
// commits the node has not yet had stay recorded in the sidecar, and the
// next Open hands them over.
func (d *remoteDevice) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return device.ErrClosed
	}
	d.closed = true
	close(d.stop)
	d.mu.Unlock()
	d.wg.Wait()
	errs := []error{d.stopAgent()}
	// The descriptor is closed only once the agent is gone: a closed
	// userfaultfd turns missing pages into zero pages.
	errs = append(errs, unix.Close(d.uffd), d.unmap())
	d.mem = nil
	d.s.close()
	return errors.Join(errs...)
}

// writePayload sends an encoded write-back batch and waits for its ack.
func (cl *client) writePayload(ctx context.Context, epoch uint64, payload []byte) error {
	f, err := cl.do(ctx, tWrite, epoch, payload, nil)
	if err == nil {
		err = expect(f, tAck)
	}
	return err
}
