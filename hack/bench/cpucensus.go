package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuSnapshot is the CPU time every process on the machine had used at
// one moment, by PID, with its command name.
type cpuSnapshot struct {
	at    time.Time
	procs map[int]procCPU
	// busy and all are the machine's CPU time (/proc/stat): spent by
	// this machine's processes and kernel, and in all.
	busy, all int64
}

type procCPU struct {
	comm string
	cpu  time.Duration
}

// takeCPUSnapshot reads /proc/*/stat.
func takeCPUSnapshot() cpuSnapshot {
	start := time.Now()
	s := cpuSnapshot{procs: map[int]procCPU{}}
	s.busy, s.all = machineCPU()

	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		line := string(b)
		open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || end < open || end+2 > len(line) {
			continue
		}
		f := strings.Fields(line[end+2:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		s.procs[pid] = procCPU{comm: line[open+1 : end], cpu: time.Duration(ut+st) * time.Second / 100} // USER_HZ
	}
	// The scan takes a moment, and the processes run meanwhile: its
	// middle is the snapshot's time.
	s.at = start.Add(time.Since(start) / 2)
	return s
}

// machineCPU reads the machine's CPU time from /proc/stat, in ticks:
// spent on anything but idling, waiting for I/O and running another
// virtual machine (steal), and in all.
func machineCPU() (busy, all int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is counted in user time already
			break
		}
		all += n
		if i != 3 && i != 4 && i != 7 { // idle, iowait, steal (another guest's)
			busy += n
		}
	}
	return busy, all
}

// cpuUse is the CPU time used between two snapshots, by who used it.
type cpuUse struct {
	Wall        time.Duration
	Busy        float64       // share of the machine's CPU time spent (/proc/stat)
	VKFleet     time.Duration // vk-fleet
	Devices     time.Duration // the simulated devices (device-agent simulate), or the baseline's clients (this benchmark)
	APIServer   time.Duration
	Controllers time.Duration // kube-controller-manager
	Scheduler   time.Duration
	Etcd        time.Duration
	Total       time.Duration // every process on the machine, these included (the kernel counts in ticks: the sum can pass Wall × cores slightly)
}

// cpuUsedSince returns what every process used from a until now. A
// process started meanwhile counts whole; one that ended meanwhile is
// missing (the benchmark ends none of its own inside a measurement).
// devices names the command whose time counts as the devices'.
func cpuUsedSince(a cpuSnapshot, devices string) cpuUse {
	b := takeCPUSnapshot()
	u := cpuUse{Wall: b.at.Sub(a.at)}
	if all := b.all - a.all; all > 0 {
		u.Busy = float64(b.busy-a.busy) / float64(all)
	}
	for pid, p := range b.procs {
		d := p.cpu
		if before, ok := a.procs[pid]; ok && before.comm == p.comm {
			d -= before.cpu
		}
		if d <= 0 {
			continue
		}
		u.Total += d
		switch p.comm {
		case "vk-fleet":
			u.VKFleet += d
		case devices:
			u.Devices += d
		case "kube-apiserver":
			u.APIServer += d
		case "kube-controller": // the kernel keeps 15 characters
			u.Controllers += d
		case "kube-scheduler":
			u.Scheduler += d
		case "etcd":
			u.Etcd += d
		}
	}
	return u
}

func (u cpuUse) String() string {
	return fmt.Sprintf("vk-fleet %.1fs, devices %.1fs, kube-apiserver %.1fs, kube-controller-manager %.1fs, etcd %.1fs, kube-scheduler %.1fs, all %.1fs in %.1fs (%.0f%% of %d cores)",
		u.VKFleet.Seconds(), u.Devices.Seconds(), u.APIServer.Seconds(), u.Controllers.Seconds(), u.Etcd.Seconds(), u.Scheduler.Seconds(),
		u.Total.Seconds(), u.Wall.Seconds(), u.Busy*100, numCPU())
}

// selfComm is this process's command name, as the kernel keeps it.
func selfComm() string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
