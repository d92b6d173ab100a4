package main

import (
	"bufio"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// workMetrics are vk-fleet's counters of the writes and waits a phase
// caused, logged as differences around it (promDelta).
var workMetrics = []string{
	"vkfleet_node_writes_total",
	"vkfleet_pod_status_reports_total",
	"vkfleet_pod_status_writes_deferred_total",
	"vkfleet_workload_writes_total",
}

// readCounters returns vk-fleet's series of the named counters from its
// /metrics, keyed by series (name and labels).
func readCounters(addr string, names []string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("reading vk-fleet's metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok || !slices.ContainsFunc(names, func(n string) bool { return series == n || strings.HasPrefix(series, n+"{") }) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[series] = v
		}
	}
	return out, sc.Err()
}

// promDelta returns, as log attributes, how much each series grew from
// before to after, in series order; series that did not grow are left out.
func promDelta(before, after map[string]float64) []any {
	var out []any
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if d := after[k] - before[k]; d > 0 {
			out = append(out, k, d)
		}
	}
	return out
}
