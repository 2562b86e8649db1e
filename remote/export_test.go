package remote

import "github.com/pmemgo/pmemgo/device"

// AgentPids returns the processes of the fault agent of d, a remote
// device: the keeper and the worker that serves the faults.
func AgentPids(d device.Device) (keeper, worker int) {
	rd := d.(*remoteDevice)
	rd.agentMu.Lock()
	defer rd.agentMu.Unlock()
	return rd.agent.cmd.Process.Pid, int(rd.agent.worker.Load())
}
