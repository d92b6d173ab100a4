package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// FleetState is what a vk-fleet process serves, read at scrape time.
type FleetState struct {
	// Connected and Silent count the devices served whose heartbeats are
	// fresh, and those whose heartbeats stopped.
	Connected, Silent int
	// HeartbeatAges holds, per device served, the seconds since its last
	// heartbeat.
	HeartbeatAges []float64
	// PodPhases counts the pods on served devices by phase.
	PodPhases map[string]int
}

// FleetSource reports the fleet's state; *provider.Provider implements it.
type FleetSource interface {
	FleetState() FleetState
}

// RegisterFleet makes Registry report src's devices and pods.
func RegisterFleet(src FleetSource) error {
	return Registry.Register(fleetCollector{src})
}

var (
	devicesDesc = prometheus.NewDesc("vkfleet_devices",
		"Devices this process serves, by state: connected (heartbeats fresh) or silent.", []string{"state"}, nil)
	heartbeatAgeDesc = prometheus.NewDesc("vkfleet_device_heartbeat_age_seconds",
		"Seconds since each served device's last heartbeat.", nil, nil)
	podsDesc = prometheus.NewDesc("vkfleet_pods",
		"Pods on the devices this process serves, by phase.", []string{"phase"}, nil)
)

// heartbeatAgeBuckets span a heartbeat interval (10 s) to a day offline.
var heartbeatAgeBuckets = []float64{5, 10, 15, 20, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600}

type fleetCollector struct{ src FleetSource }

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- devicesDesc
	ch <- heartbeatAgeDesc
	ch <- podsDesc
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.FleetState()
	ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(st.Connected), "connected")
	ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(st.Silent), "silent")
	counts := make(map[float64]uint64, len(heartbeatAgeBuckets))
	var sum float64
	ages := append([]float64(nil), st.HeartbeatAges...)
	sort.Float64s(ages)
	i := 0
	for _, b := range heartbeatAgeBuckets {
		for i < len(ages) && ages[i] <= b {
			i++
		}
		counts[b] = uint64(i)
	}
	for _, a := range ages {
		sum += a
	}
	ch <- prometheus.MustNewConstHistogram(heartbeatAgeDesc, uint64(len(ages)), sum, counts)
	phases := []string{"Pending", "Running", "Succeeded", "Failed", "Unknown"}
	for _, ph := range phases {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(st.PodPhases[ph]), ph)
	}
}
