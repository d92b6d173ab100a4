package nodeagent

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

func TestParseQuantity(t *testing.T) {
	for _, tc := range []struct {
		in    string
		scale int64
		want  int64
	}{
		{"100Mi", 1, 100 << 20}, {"1Gi", 1, 1 << 30}, {"1.5Gi", 1, 3 << 29}, {"2k", 1, 2000}, {"1M", 1, 1e6},
		{"100m", 1000, 100}, {"0.5", 1000, 500}, {"2", 1000, 2000}, {"1", 1, 1}, {"1e3", 1, 1000},
		{"1m", 1, 1}, // rounded up, as Quantity.Value
	} {
		got, err := parseQuantity(tc.in, tc.scale)
		if err != nil || got != tc.want {
			t.Errorf("parseQuantity(%q, %d) = %d, %v; want %d", tc.in, tc.scale, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "Mi", "-1Mi", "1/2", "abc", "1Xi"} {
		if _, err := parseQuantity(bad, 1); !errors.Is(err, errQuantity) {
			t.Errorf("parseQuantity(%q): err %v, want errQuantity", bad, err)
		}
	}
}

func TestParseResourceAmounts(t *testing.T) {
	got, err := ParseResourceAmounts("cpu=100m, memory=256Mi,ephemeral-storage=1Gi")
	want := bridge.ResourceAmounts{CPUMilli: 100, MemoryBytes: 256 << 20, EphemeralStorageBytes: 1 << 30}
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if got, err := ParseResourceAmounts(""); err != nil || got != (bridge.ResourceAmounts{}) {
		t.Errorf("empty: %+v, %v", got, err)
	}
	for _, bad := range []string{"cpu", "gpu=1", "memory=lots"} {
		if _, err := ParseResourceAmounts(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseEvictionHard(t *testing.T) {
	th, err := ParseEvictionHard(DefaultEvictionHard)
	if err != nil {
		t.Fatal(err)
	}
	want := []Threshold{
		{Signal: SignalMemoryAvailable, Quantity: 100 << 20},
		{Signal: SignalNodeFsAvailable, Percent: 10},
		{Signal: SignalNodeFsInodesFree, Percent: 5},
		{Signal: SignalImageFsAvailable, Percent: 15},
		{Signal: SignalImageFsInodesFree, Percent: 5},
	}
	if !slices.Equal(th, want) {
		t.Errorf("defaults: %v, want %v", th, want)
	}
	// A later threshold replaces an earlier one; zero disables.
	th, err = ParseEvictionHard("memory.available<1Gi,pid.available<10%,memory.available<200Mi,nodefs.available<0%")
	want = []Threshold{{Signal: SignalPIDAvailable, Percent: 10}, {Signal: SignalMemoryAvailable, Quantity: 200 << 20}}
	if err != nil || !slices.Equal(th, want) {
		t.Errorf("got %v, %v; want %v", th, err, want)
	}
	if th, err := ParseEvictionHard(""); err != nil || th == nil || len(th) != 0 {
		t.Errorf("empty: %v, %v; want no thresholds (not nil, which means the defaults)", th, err)
	}
	for _, bad := range []string{"memory.available>1Gi", "cpu.available<1", "nodefs.available<101%", "memory.available<x"} {
		if _, err := ParseEvictionHard(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// fakeHost is a device whose /proc files and filesystems tests set.
type fakeHost struct {
	files map[string]string
	fs    map[string]fsStats
}

func (h *fakeHost) reader() hostReader {
	return hostReader{
		readFile: func(p string) ([]byte, error) {
			if s, ok := h.files[p]; ok {
				return []byte(s), nil
			}
			return nil, fmt.Errorf("open %s: %w", p, fs.ErrNotExist)
		},
		statfs: func(p string) (fsStats, error) {
			if s, ok := h.fs[p]; ok {
				return s, nil
			}
			return fsStats{}, fmt.Errorf("statfs %s: %w", p, fs.ErrNotExist)
		},
	}
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		files: map[string]string{
			"/proc/meminfo":                "MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     500000 kB\nBuffers: 1 kB\n",
			"/proc/sys/kernel/pid_max":     "32768\n",
			"/proc/sys/kernel/threads-max": "15000\n",
			"/proc/loadavg":                "0.10 0.20 0.30 2/300 12345\n",
		},
		fs: map[string]fsStats{
			"/state": {capacity: 1000, available: 500, inodes: 100, inodesFree: 50},
			"/graph": {capacity: 2000, available: 1000, inodes: 100, inodesFree: 50},
		},
	}
}

func TestObserve(t *testing.T) {
	h := newFakeHost()
	obs, err := h.reader().observe("/state", "/graph")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]observation{
		SignalMemoryAvailable:   {500000 * 1024, 1000000 * 1024},
		SignalPIDAvailable:      {15000 - 300, 15000}, // the smaller of pid_max and threads-max
		SignalNodeFsAvailable:   {500, 1000},
		SignalNodeFsInodesFree:  {50, 100},
		SignalImageFsAvailable:  {1000, 2000},
		SignalImageFsInodesFree: {50, 100},
	}
	for s, w := range want {
		if obs[s] != w {
			t.Errorf("%s: %+v, want %+v", s, obs[s], w)
		}
	}

	// What cannot be read is left out, and said.
	delete(h.files, "/proc/loadavg")
	h.files["/proc/meminfo"] = "MemTotal: 1 kB\n"
	obs, err = h.reader().observe("/state", "/missing")
	if err == nil {
		t.Error("no error for unreadable signals")
	}
	for _, s := range []string{SignalMemoryAvailable, SignalPIDAvailable, SignalImageFsAvailable} {
		if _, ok := obs[s]; ok {
			t.Errorf("%s observed from unreadable files", s)
		}
	}
	if _, ok := obs[SignalNodeFsAvailable]; !ok {
		t.Error("nodefs not observed")
	}
}

func TestPressure(t *testing.T) {
	h := newFakeHost()
	th, _ := ParseEvictionHard(DefaultEvictionHard)
	m := &pressureMonitor{thresholds: th, period: 5 * time.Minute, host: h.reader()}
	t0 := time.Unix(1000, 0)
	step := func(at time.Time) *bridge.NodePressure {
		t.Helper()
		obs, err := m.host.observe("/state", "/graph")
		if err != nil {
			t.Fatal(err)
		}
		return m.update(obs, at)
	}
	if p := step(t0); p.Memory || p.Disk || p.PID || len(p.Signals) > 0 {
		t.Fatalf("pressure on a healthy device: %+v", p)
	}
	// Memory: 50 MiB available < 100Mi.
	h.files["/proc/meminfo"] = "MemTotal: 1000000 kB\nMemAvailable: 51200 kB\n"
	// imagefs 14% free: below imagefs.available<15%, nodefs still fine.
	h.fs["/graph"] = fsStats{capacity: 100, available: 14, inodes: 100, inodesFree: 50}
	p := step(t0.Add(time.Second))
	if !p.Memory || !p.Disk || p.PID {
		t.Fatalf("got %+v, want memory and disk pressure", p)
	}
	if !slices.Equal(p.Signals, []string{SignalMemoryAvailable, SignalImageFsAvailable}) {
		t.Errorf("signals %v", p.Signals)
	}
	// Resolved: the conditions stay for the transition period, as kubelet's.
	h.files["/proc/meminfo"] = "MemTotal: 1000000 kB\nMemAvailable: 900000 kB\n"
	h.fs["/graph"] = fsStats{capacity: 100, available: 90}
	if p := step(t0.Add(4 * time.Minute)); !p.Memory || !p.Disk || len(p.Signals) > 0 {
		t.Errorf("within the transition period: %+v", p)
	}
	if p := step(t0.Add(6 * time.Minute)); p.Memory || p.Disk {
		t.Errorf("after the transition period: %+v", p)
	}

	// The eviction reserve: memory.available and nodefs.available, of the
	// capacities last observed.
	got := *m.evictionReserved()
	want := bridge.ResourceAmounts{MemoryBytes: 100 << 20, EphemeralStorageBytes: 100} // 10% of 1000
	if got != want {
		t.Errorf("eviction reserve %+v, want %+v", got, want)
	}

	// PIDs: a threshold that cannot be met... and one that is.
	m.thresholds, _ = ParseEvictionHard("pid.available<100%")
	if p := step(t0.Add(7 * time.Minute)); !p.PID || p.Memory || p.Disk {
		t.Errorf("pid.available<100%%: %+v", p)
	}
	m.thresholds, _ = ParseEvictionHard("pid.available<1000")
	if p := step(t0.Add(20 * time.Minute)); p.PID {
		t.Errorf("14700 PIDs available < 1000: %+v", p)
	}
}
