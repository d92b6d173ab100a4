package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// DefaultMaxPods is the pod capacity a device reports.
const DefaultMaxPods = 110

// inventory reads what the device is. It never fails: what cannot be read
// is left empty.
func (a *Agent) inventory(ctx context.Context) bridge.Inventory {
	inv := bridge.Inventory{
		Architecture:    runtime.GOARCH,
		OS:              runtime.GOOS,
		CPUs:            runtime.NumCPU(),
		MaxPods:         DefaultMaxPods,
		AgentVersion:    a.cfg.AgentVersion,
		ProtocolVersion: bridge.ProtocolVersion,
		KernelVersion:   readTrimmed("/proc/sys/kernel/osrelease"),
		MachineID:       readTrimmed("/etc/machine-id"),
		BootID:          readTrimmed("/proc/sys/kernel/random/boot_id"),
		OSImage:         osImage(),
		MemoryBytes:     memTotal(),
		Addresses:       a.cfg.Addresses,
	}
	inv.Hostname, _ = os.Hostname()
	if len(inv.Addresses) == 0 {
		inv.Addresses = hostAddresses()
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if v, err := a.rt.Version(vctx); err == nil {
		inv.PodmanVersion = v
	}
	a.resourceInventory(ctx, &inv)
	return inv
}

func (a *Agent) hostIP() string {
	if len(a.cfg.Addresses) > 0 {
		return a.cfg.Addresses[0]
	}
	if addrs := hostAddresses(); len(addrs) > 0 {
		return addrs[0]
	}
	return ""
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func osImage() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// hostAddresses lists global unicast addresses of interfaces that are up,
// IPv4 first, skipping container bridges and virtual ethernet pairs.
func hostAddresses() []string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var v4, v6 []string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		if strings.HasPrefix(ifc.Name, "veth") || strings.HasPrefix(ifc.Name, "cni") ||
			strings.HasPrefix(ifc.Name, "podman") || strings.HasPrefix(ifc.Name, "docker") {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if ipn.IP.To4() != nil {
				v4 = append(v4, ipn.IP.String())
			} else {
				v6 = append(v6, ipn.IP.String())
			}
		}
	}
	return append(v4, v6...)
}

// fullHeartbeatEvery bounds how long a device goes without sending its
// state in full, also when nothing changed.
const fullHeartbeatEvery = 30 * time.Minute

// heartbeatLoop publishes a heartbeat every interval. A heartbeat carries
// the device's inventory, runtime error and pressure only when they changed
// since the last one that did, after a reconnect, when the provider asks,
// and at least every fullHeartbeatEvery; otherwise it is quiet (protocol 7),
// unless the provider is older and expects every heartbeat in full.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	asked := make(chan struct{}, 1)
	sub, err := a.nc.Subscribe(bridge.InventoryRequestSubject(a.cfg.Device), func(*nats.Msg) {
		select {
		case asked <- struct{}{}:
		default:
		}
	})
	if err != nil {
		a.log.Warn("subscribing to inventory requests; every heartbeat is sent in full", "err", err)
	} else {
		defer func() { _ = sub.Unsubscribe() }()
	}
	inv := a.inventory(ctx)
	invAt := time.Now()
	var sentState string
	var sentAt time.Time
	var reconnects uint64
	force := true
	var lastContact, wroteAt time.Time
	wroteConnected := false
	for {
		connected := a.nc.IsConnected()
		if connected {
			if time.Since(invAt) > time.Minute || inv.PodmanVersion == "" {
				inv, invAt = a.inventory(ctx), time.Now()
			}
			if r := a.nc.Stats().Reconnects; r != reconnects {
				reconnects, force = r, true
			}
			pressure := a.observePressure(ctx)
			a.mu.Lock()
			a.seq++
			hb := bridge.Heartbeat{
				Pressure:        pressure,
				Device:          a.cfg.Device,
				Time:            time.Now().UTC(),
				Seq:             a.seq,
				IntervalSeconds: int(a.cfg.HeartbeatInterval / time.Second),
				Inventory:       inv,
				Pods:            a.podCount,
				RuntimeError:    a.runtimeErr,
			}
			quietOK := a.providerProtocol >= 7 && err == nil
			a.mu.Unlock()
			hb.State = bridge.StateHash(&hb)
			if quietOK && !force && hb.State == sentState && time.Since(sentAt) < fullHeartbeatEvery {
				hb = bridge.Heartbeat{Seq: hb.Seq, Pods: hb.Pods, State: hb.State}
			}
			if data, err := bridge.Encode(&hb); err == nil {
				if err := a.nc.Publish(bridge.HeartbeatSubject(a.cfg.Device), data); err != nil {
					a.log.Debug("publishing heartbeat", "err", err)
				} else if lastContact = time.Now(); hb.Full() {
					sentState, sentAt, force = hb.State, time.Now(), false
					metrics.AgentHeartbeats.WithLabelValues("full").Inc()
				} else {
					metrics.AgentHeartbeats.WithLabelValues("quiet").Inc()
				}
			}
		}
		// Not on every offline poll: at the interval, or when the
		// connection came or went.
		if connected != wroteConnected || time.Since(wroteAt) >= a.cfg.HeartbeatInterval {
			a.writeLocalStatus(connected, lastContact)
			wroteConnected, wroteAt = connected, time.Now()
		}
		var offline <-chan time.Time
		if !connected {
			// The first heartbeat goes out as soon as the connection is
			// up, not an interval later: a fleet coming back is Ready at once.
			offline = time.After(250 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-offline:
		case <-asked:
			force = true
		}
	}
}
