package nodeagent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture the agent is built for.
const clockTicks = 100

// readHostStats reads the device's CPU time, memory and boot time from
// /proc, as a kubelet's cAdvisor does for the node's figures.
func readHostStats() (bridge.NodeStats, error) {
	var n bridge.NodeStats
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return n, fmt.Errorf("reading cpu time: %w", err)
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return n, fmt.Errorf("reading cpu time: unexpected /proc/stat line %q", line)
	}
	var ticks uint64
	// user nice system idle iowait irq softirq steal: all but idle and iowait.
	for i, v := range f[1:min(len(f), 9)] {
		if i == 3 || i == 4 {
			continue
		}
		t, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return n, fmt.Errorf("reading cpu time: %w", err)
		}
		ticks += t
	}
	n.CPUNanos = ticks * uint64(time.Second/clockTicks)

	mem, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return n, fmt.Errorf("reading memory: %w", err)
	}
	kb := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(mem))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		if x, err := strconv.ParseUint(fs[0], 10, 64); err == nil {
			kb[k] = x * 1024
		}
	}
	total, avail := kb["MemTotal"], kb["MemAvailable"]
	if total > avail {
		n.MemoryUsageBytes = total - kb["MemFree"]
		n.MemoryWorkingSetBytes = total - avail
	}
	n.MemoryAvailableBytes = avail

	if up, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(up)); len(f) > 0 {
			if s, err := strconv.ParseFloat(f[0], 64); err == nil {
				n.StartTime = time.Now().Add(-time.Duration(s * float64(time.Second))).Truncate(time.Second)
			}
		}
	}
	return n, nil
}
