package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Eviction signals, spelled as kubelet's.
const (
	SignalMemoryAvailable   = "memory.available"
	SignalNodeFsAvailable   = "nodefs.available"
	SignalNodeFsInodesFree  = "nodefs.inodesFree"
	SignalImageFsAvailable  = "imagefs.available"
	SignalImageFsInodesFree = "imagefs.inodesFree"
	SignalPIDAvailable      = "pid.available"
)

// DefaultEvictionHard is kubelet's default --eviction-hard on Linux.
const DefaultEvictionHard = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%"

// DefaultPressureTransitionPeriod is kubelet's default
// --eviction-pressure-transition-period: how long a pressure condition
// stays true after its threshold was last met.
const DefaultPressureTransitionPeriod = 5 * time.Minute

// Threshold is a hard eviction threshold: the signal's available amount
// is below Quantity, or below Percent of its capacity.
type Threshold struct {
	Signal   string
	Quantity int64   // bytes, inodes or PIDs; used when Percent is 0
	Percent  float64 // of capacity, in (0, 100]
}

// String spells t as --eviction-hard does.
func (t Threshold) String() string {
	if t.Percent > 0 {
		return t.Signal + "<" + strconv.FormatFloat(t.Percent, 'f', -1, 64) + "%"
	}
	return t.Signal + "<" + strconv.FormatInt(t.Quantity, 10)
}

// value is t's threshold for a signal whose capacity is capacity.
func (t Threshold) value(capacity int64) int64 {
	if t.Percent > 0 {
		return int64(float64(capacity) * t.Percent / 100)
	}
	return t.Quantity
}

// ParseEvictionHard parses kubelet's --eviction-hard syntax:
// "memory.available<100Mi,nodefs.available<10%". A threshold of zero
// disables its signal; an empty string sets no thresholds.
func ParseEvictionHard(s string) ([]Threshold, error) {
	out := []Threshold{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sig, val, ok := strings.Cut(part, "<")
		if !ok {
			return nil, fmt.Errorf("%q: want signal<quantity or signal<percent%%", part)
		}
		switch sig {
		case SignalMemoryAvailable, SignalNodeFsAvailable, SignalNodeFsInodesFree,
			SignalImageFsAvailable, SignalImageFsInodesFree, SignalPIDAvailable:
		default:
			return nil, fmt.Errorf("%q: unknown eviction signal", sig)
		}
		t := Threshold{Signal: sig}
		if p, ok := strings.CutSuffix(val, "%"); ok {
			f, err := strconv.ParseFloat(p, 64)
			if err != nil || f < 0 || f > 100 {
				return nil, fmt.Errorf("%s: percentage %q must be between 0%% and 100%%", sig, val)
			}
			t.Percent = f
		} else {
			q, err := parseQuantity(val, 1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sig, err)
			}
			t.Quantity = q
		}
		if t.Percent == 0 && t.Quantity == 0 {
			continue // disabled
		}
		out = slices.DeleteFunc(out, func(o Threshold) bool { return o.Signal == sig })
		out = append(out, t)
	}
	return out, nil
}

// fsStats are a filesystem's sizes, as statfs(2) gives them.
type fsStats struct {
	capacity, available int64 // bytes; available to unprivileged users
	inodes, inodesFree  int64
}

// hostReader reads what pressure is computed from; tests replace it.
type hostReader struct {
	readFile func(string) ([]byte, error)
	statfs   func(string) (fsStats, error)
}

var realHost = hostReader{readFile: os.ReadFile, statfs: statfs}

// observation is a signal's available amount and capacity.
type observation struct{ available, capacity int64 }

// observe reads every signal it can: memory from /proc/meminfo
// (MemAvailable), PIDs as kubelet counts them (the smaller of pid_max and
// threads-max, minus the tasks in /proc/loadavg), and the filesystems of
// nodefs and imagefs (skipped when empty). A signal that cannot be read is
// missing from the result, and its error joined into err.
func (r hostReader) observe(nodefs, imagefs string) (map[string]observation, error) {
	obs := map[string]observation{}
	var errs []error
	if mem, err := r.readFile("/proc/meminfo"); err != nil {
		errs = append(errs, fmt.Errorf("reading memory: %w", err))
	} else if total, avail, err := parseMeminfo(mem); err != nil {
		errs = append(errs, err)
	} else {
		obs[SignalMemoryAvailable] = observation{avail, total}
	}
	if max, running, err := r.pids(); err != nil {
		errs = append(errs, err)
	} else {
		obs[SignalPIDAvailable] = observation{max - running, max}
	}
	for _, fs := range []struct {
		path, avail, inodes string
	}{{nodefs, SignalNodeFsAvailable, SignalNodeFsInodesFree}, {imagefs, SignalImageFsAvailable, SignalImageFsInodesFree}} {
		if fs.path == "" {
			continue
		}
		st, err := r.statfs(fs.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("statfs %s: %w", fs.path, err))
			continue
		}
		obs[fs.avail] = observation{st.available, st.capacity}
		if st.inodes > 0 { // some filesystems have no inode limit
			obs[fs.inodes] = observation{st.inodesFree, st.inodes}
		}
	}
	return obs, errors.Join(errs...)
}

// parseMeminfo returns MemTotal and MemAvailable of /proc/meminfo, in bytes.
func parseMeminfo(b []byte) (total, avail int64, err error) {
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != "MemTotal" && k != "MemAvailable" {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parsing /proc/meminfo %s: %w", k, err)
		}
		if k == "MemTotal" {
			total = kb * 1024
		} else {
			avail = kb * 1024
		}
		found++
	}
	if found < 2 {
		return 0, 0, errors.New("parsing /proc/meminfo: no MemTotal or MemAvailable")
	}
	return total, avail, nil
}

// pids returns the task limit (the smaller of kernel.pid_max and
// kernel.threads-max) and the number of tasks, as kubelet's pid.available
// reads them.
func (r hostReader) pids() (max, running int64, err error) {
	max = -1
	for _, f := range []string{"/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"} {
		b, err := r.readFile(f)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && (max < 0 || n < max) {
			max = n
		}
	}
	if max < 0 {
		return 0, 0, errors.New("reading the pid limit: neither pid_max nor threads-max")
	}
	b, err := r.readFile("/proc/loadavg")
	if err != nil {
		return 0, 0, fmt.Errorf("reading tasks: %w", err)
	}
	// "1.36 3.49 4.53 2/3518 3715089": runnable/total tasks.
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("parsing /proc/loadavg %q", b)
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, 0, fmt.Errorf("parsing /proc/loadavg %q", b)
	}
	running, err = strconv.ParseInt(total, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parsing /proc/loadavg: %w", err)
	}
	return max, running, nil
}

// conditionOf names the pressure a signal's threshold raises.
func conditionOf(signal string) string {
	switch signal {
	case SignalMemoryAvailable:
		return "memory"
	case SignalPIDAvailable:
		return "pid"
	}
	return "disk"
}

// pressureMonitor turns observations into pressure conditions, holding
// each true for the transition period after its threshold was last met,
// as kubelet's eviction manager does. The zero value has no thresholds.
type pressureMonitor struct {
	thresholds []Threshold
	period     time.Duration
	host       hostReader

	mu       sync.Mutex
	lastMet  map[string]time.Time // condition → when a threshold of it was last met
	lastErr  string
	capacity map[string]int64 // signal → capacity at the last observation
}

// met returns the thresholds obs meets, by signal name.
func (m *pressureMonitor) met(obs map[string]observation) []string {
	var out []string
	for _, t := range m.thresholds {
		o, ok := obs[t.Signal]
		if ok && o.available < t.value(o.capacity) {
			out = append(out, t.Signal)
		}
	}
	return out
}

// update records obs at now and returns the pressure to report.
func (m *pressureMonitor) update(obs map[string]observation, now time.Time) *bridge.NodePressure {
	signals := m.met(obs)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastMet == nil {
		m.lastMet = map[string]time.Time{}
	}
	m.capacity = map[string]int64{}
	for s, o := range obs {
		m.capacity[s] = o.capacity
	}
	for _, s := range signals {
		m.lastMet[conditionOf(s)] = now
	}
	on := func(cond string) bool {
		at, ok := m.lastMet[cond]
		return ok && now.Sub(at) < max(m.period, time.Nanosecond)
	}
	return &bridge.NodePressure{Memory: on("memory"), Disk: on("disk"), PID: on("pid"), Signals: signals}
}

// evictionReserved is what the hard thresholds on memory.available and
// nodefs.available hold back of the capacities last observed: kubelet
// subtracts it from allocatable.
func (m *pressureMonitor) evictionReserved() *bridge.ResourceAmounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	var r bridge.ResourceAmounts
	for _, t := range m.thresholds {
		switch t.Signal {
		case SignalMemoryAvailable:
			r.MemoryBytes = t.value(m.capacity[t.Signal])
		case SignalNodeFsAvailable:
			r.EphemeralStorageBytes = t.value(m.capacity[t.Signal])
		}
	}
	return &r
}

// ImageStore is implemented by runtimes that can say where they keep
// images and containers: the device's imagefs.
type ImageStore interface {
	ImageStore(ctx context.Context) (string, error)
}

// observePressure reads the device's signals and returns its pressure.
func (a *Agent) observePressure(ctx context.Context) *bridge.NodePressure {
	obs, err := a.pressure.host.observe(a.cfg.StateDir, a.imageFS(ctx))
	p := a.pressure.update(obs, time.Now())
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	a.pressure.mu.Lock()
	changed := msg != a.pressure.lastErr
	a.pressure.lastErr = msg
	a.pressure.mu.Unlock()
	if changed && msg != "" {
		a.log.Warn("reading eviction signals", "err", err)
	}
	if len(p.Signals) > 0 {
		a.log.Debug("eviction thresholds met", "signals", p.Signals)
	}
	return p
}

// imageFS is the runtime's image store, "" until the runtime says.
func (a *Agent) imageFS(ctx context.Context) string {
	a.mu.Lock()
	dir := a.imageStore
	a.mu.Unlock()
	if dir != "" {
		return dir
	}
	is, ok := a.rt.(ImageStore)
	if !ok {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	dir, err := is.ImageStore(ctx)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	a.imageStore = dir
	a.mu.Unlock()
	return dir
}

// resourceInventory adds the device's ephemeral storage, reserve and
// eviction reserve to inv.
func (a *Agent) resourceInventory(ctx context.Context, inv *bridge.Inventory) {
	a.pressure.mu.Lock()
	observed := a.pressure.capacity != nil
	a.pressure.mu.Unlock()
	if !observed {
		a.observePressure(ctx) // the eviction reserve needs the capacities
	}
	if st, err := a.pressure.host.statfs(a.cfg.StateDir); err == nil {
		inv.EphemeralStorageBytes = st.capacity
	}
	if r := a.cfg.SystemReserved; r != nil && *r != (bridge.ResourceAmounts{}) {
		inv.Reserved = r
	}
	inv.EvictionReserved = a.pressure.evictionReserved()
}
