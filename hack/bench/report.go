package main

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var metaGet = metav1.GetOptions{}

func sec(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a.Seconds()/b.Seconds())
}

// render prints the results as markdown tables.
func render(rs []result) string {
	var b strings.Builder
	b.WriteString("### Pod startup: DaemonSet creation → pod Running (watch), and until the DaemonSet reports all pods ready\n\n")
	b.WriteString("| devices | vk-fleet p50 | p90 | p99 | all ready | baseline p50 | p90 | p99 | all ready | ratio p50 | ratio p99 | ratio all ready |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		if r.Ours.P50 == 0 {
			continue // no rollout measured at this size (-rollout=false)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.N,
			sec(r.Ours.P50), sec(r.Ours.P90), sec(r.Ours.P99), sec(r.Ours.AllReady),
			sec(r.Base.P50), sec(r.Base.P90), sec(r.Base.P99), sec(r.Base.AllReady),
			ratio(r.Ours.P50, r.Base.P50), ratio(r.Ours.P99, r.Base.P99), ratio(r.Ours.AllReady, r.Base.AllReady))
	}
	b.WriteString("\n### vk-fleet per device\n\n")
	b.WriteString("| devices | RSS idle | RSS idle / device | anon idle / device | RSS / device over the previous size | RSS peak in rollout | goroutines / device | CPU idle / device | CPU in rollout | API requests / device / min (idle) | NATS bytes / device / min (idle) | N enrollments, one token | all Ready after enrollment | mass reconnect: all heard from | all Ready | baseline: all Ready after the same reconnect | API requests / device in the reconnect |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range rs {
		marginal := "-"
		if i > 0 && r.N > rs[i-1].N {
			marginal = fmt.Sprintf("%.1f KiB", float64(r.IdleRSS-rs[i-1].IdleRSS)/1024/float64(r.N-rs[i-1].N))
		}
		baseReconnect := "-"
		if r.BaseReconnect > 0 {
			baseReconnect = sec(r.BaseReconnect)
		}
		fmt.Fprintf(&b, "| %d | %.0f MiB | %.1f KiB | %.1f KiB | %s | %.0f MiB | %.1f | %.2f ms/s | %.0f%% of a core | %.1f | %.0f | %s | %s | %s | %s | %s | %.1f |\n", r.N,
			float64(r.IdleRSS)/(1<<20), float64(r.IdleRSS)/1024/float64(r.N), float64(r.IdleAnon)/1024/float64(r.N), marginal, float64(r.RolloutRSS)/(1<<20),
			float64(r.IdleGoroutines)/float64(r.N), r.IdleCPU*1000/float64(r.N), r.RolloutCPU*100,
			r.APIPerDevMin, r.NATSBytesDevMin, sec(r.Enrolled), sec(r.ReadyAfterEnroll), sec(r.Reconnected), sec(r.Reconnect), baseReconnect, r.ReconnectAPI)
	}
	b.WriteString("\n### CPU time by process: from the simulator's start until all N devices are enrolled, and from the mass reconnect until every Node is Ready\n\n")
	b.WriteString("| devices | phase, who | took | vk-fleet | vk-fleet / device | devices | kube-apiserver | controller-manager | etcd | scheduler | every process | share of the machine |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	cpuRow := func(n int, who string, took time.Duration, u cpuUse) {
		perDev := "-"
		if u.VKFleet > 0 {
			perDev = fmt.Sprintf("%.1f ms", u.VKFleet.Seconds()*1000/float64(n))
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.1fs | %s | %.1fs | %.1fs | %.1fs | %.1fs | %.1fs | %.1fs | %.0f%% of %d cores |\n", n, who, sec(took),
			u.VKFleet.Seconds(), perDev, u.Devices.Seconds(), u.APIServer.Seconds(), u.Controllers.Seconds(), u.Etcd.Seconds(), u.Scheduler.Seconds(),
			u.Total.Seconds(), u.Busy*100, numCPU())
	}
	for _, r := range rs {
		if r.EnrollCPU.Wall > 0 {
			cpuRow(r.N, "enrollment: vk-fleet and simulated devices", r.Enrolled, r.EnrollCPU)
		}
		if r.ReconnectCPU.Wall > 0 {
			cpuRow(r.N, "reconnect: vk-fleet and simulated devices", r.Reconnect, r.ReconnectCPU)
		}
		if r.BaseReconnectCPU.Wall > 0 {
			cpuRow(r.N, "reconnect: baseline (its clients in the benchmark)", r.BaseReconnect, r.BaseReconnectCPU)
		}
	}
	return b.String()
}
