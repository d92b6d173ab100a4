package provider

import (
	"time"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

var _ metrics.FleetSource = (*Provider)(nil)

// DeviceCount returns how many devices this process has heard from and
// serves (or served: a silent device still has its Node kept).
func (p *Provider) DeviceCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.devices)
}

// FleetState reports the devices and pods this process serves, for
// Prometheus (metrics.RegisterFleet).
func (p *Provider) FleetState() metrics.FleetState {
	st := metrics.FleetState{PodPhases: map[string]int{}}
	now := time.Now()
	devs := p.deviceList()
	p.mu.Lock()
	for _, ent := range p.pods.byKey {
		if ent.pod == nil || !p.owns(ent.pod.Spec.NodeName) {
			continue
		}
		phase := "Pending"
		switch {
		case ent.refusal != nil && ent.refusal.Phase != "":
			phase = string(ent.refusal.Phase)
		case ent.status != nil && ent.status.Phase != "":
			phase = ent.status.Phase
		}
		st.PodPhases[phase]++
	}
	p.mu.Unlock()
	for _, d := range devs {
		d.mu.Lock()
		served, age := d.served, now.Sub(d.lastSeen)
		d.mu.Unlock()
		if !served {
			continue
		}
		st.HeartbeatAges = append(st.HeartbeatAges, age.Seconds())
		if age > p.cfg.HeartbeatTimeout {
			st.Silent++
		} else {
			st.Connected++
		}
	}
	return st
}

// ConnectedDevices returns how many served devices were heard from within
// the heartbeat timeout: FleetState's Connected, without the pods' phases
// and every device's heartbeat age (cheap enough to poll).
func (p *Provider) ConnectedDevices() int {
	now := time.Now()
	n := 0
	for _, d := range p.deviceList() {
		d.mu.Lock()
		if d.served && now.Sub(d.lastSeen) <= p.cfg.HeartbeatTimeout {
			n++
		}
		d.mu.Unlock()
	}
	return n
}

// deviceList returns the devices this process knows, to be read under
// each one's own lock after p.mu is released.
func (p *Provider) deviceList() []*device {
	p.mu.Lock()
	defer p.mu.Unlock()
	devs := make([]*device, 0, len(p.devices))
	for _, d := range p.devices {
		devs = append(devs, d)
	}
	return devs
}
