package remote

import (
	"slices"
	"time"

	"github.com/pmemgo/pmemgo/device"
)

// AgentPids returns the processes of the fault agent of d, a remote
// device: the keeper and the worker that serves the faults.
func AgentPids(d device.Device) (keeper, worker int) {
	rd := d.(*remoteDevice)
	rd.agentMu.Lock()
	defer rd.agentMu.Unlock()
	return rd.agent.cmd.Process.Pid, int(rd.agent.worker.Load())
}

// NodeReadLatency returns the median of n demand reads of one page of
// region name from the node at addr, each on the agent's fetch path (a
// blocking connection, one request at a time) and without a fault.
func NodeReadLatency(addr, name string, size uint64, n int) (time.Duration, error) {
	a := &agent{cfg: agentConfig{Addr: addr, Name: name, Region: size}}
	var f fetcher
	defer f.close()
	page := make([]byte, PageSize)
	lat := make([]time.Duration, n)
	for i := range lat {
		t0 := time.Now()
		off := uint64(i) * PageSize % size
		if err := f.read(a, off, page, time.Now().Add(10*time.Second)); err != nil {
			return 0, err
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	return lat[n/2], nil
}

// SetRotateHook makes fn be called after each step of a key rotation,
// with the region offset reached, until restore is called.
func SetRotateHook(fn func(off uint64)) (restore func()) {
	rotateHook = fn
	return func() { rotateHook = nil }
}
