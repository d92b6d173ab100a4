// Command bench measures vk-fleet against the real local control plane:
// pod startup latency of a DaemonSet rolled out to N simulated devices,
// compared with a baseline in the same run (Nodes whose pods a minimal
// client sets Running directly: what the control plane alone costs), plus
// vk-fleet's resource use and traffic per device. Run it with hack/bench.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

func main() {
	sizes := flag.String("n", "100,1000", "comma-separated fleet sizes")
	out := flag.String("out", "", "write the markdown table to this file (default: stdout only)")
	idle := flag.Duration("idle", time.Minute, "idle window for per-device traffic")
	baseline := flag.Bool("baseline", true, "measure the control plane's own rollout too (the ratios need it)")
	rollout := flag.Bool("rollout", true, "measure vk-fleet's DaemonSet rollout (false: enrollment, idle costs and the mass reconnect only)")
	keep := flag.Bool("keep", false, "keep each size's logs and state (default: removed after a successful run)")
	device := flag.Bool("device", true, "measure the device side too: binary sizes for linux/arm64 and linux/arm, device-agent's RSS with 10 pods on real podman")
	profiles := flag.String("profiles", "", "write vk-fleet's heap and goroutine profiles at idle into this directory")
	kcmGates := flag.String("kcm-feature-gates", "", "kube-controller-manager's --feature-gates, for the baseline and vk-fleet alike (default: the component's defaults); "+
		"at 5,000 devices on 2 cores, StaleControllerConsistencyDaemonSet=false keeps the DaemonSet controller from backing off for minutes")
	var vkfleetEnv []string
	flag.Func("vk-fleet-env", "KEY=VALUE in vk-fleet's environment only (repeatable), e.g. GOGC=50 to compare a runtime setting", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		vkfleetEnv = append(vkfleetEnv, v)
		return nil
	})
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx := context.Background()
	bin, err := controlplane.BinDir()
	if err != nil {
		fail(err)
	}
	binDir := os.Getenv("VKF_BIN_DIR")
	if binDir == "" {
		fail(fmt.Errorf("VKF_BIN_DIR must name the directory with vk-fleet and device-agent (hack/bench.sh sets it)"))
	}
	var results []result
	broke := ""
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fail(fmt.Errorf("bad size %q", s))
		}
		dir, _ := os.MkdirTemp("", fmt.Sprintf("vkf-bench-%d-", n))
		r, err := runSize(ctx, runConfig{N: n, Dir: dir, CPBin: bin, BinDir: binDir, Idle: *idle, Log: log, Baseline: *baseline, Rollout: *rollout, Profiles: *profiles, KCMFeatureGates: *kcmGates, VKFleetEnv: vkfleetEnv})
		if err != nil {
			// Where it breaks is a result too: the sizes measured so far
			// are kept, with what stopped this one.
			log.Error("size failed", "n", n, "err", err, "logs", dir)
			broke = fmt.Sprintf("\n**%d devices did not complete on this machine:** %v (logs were in %s).\n", n, err, dir)
			break
		}
		if *keep {
			log.Info("logs kept", "n", n, "dir", dir)
		} else {
			os.RemoveAll(dir)
		}
		results = append(results, r)
		fmt.Println(r.summary())
		fmt.Println(render([]result{r})) // in the log at once, whatever comes next
	}
	table := render(results) + broke
	if *kcmGates != "" {
		table += fmt.Sprintf("\nkube-controller-manager ran with `--feature-gates=%s`, not its defaults.\n", *kcmGates)
	}
	if len(vkfleetEnv) > 0 {
		table += fmt.Sprintf("\nvk-fleet ran with `%s` in its environment.\n", strings.Join(vkfleetEnv, " "))
	}
	if *device {
		// A short directory: podman's sockets live under it.
		dir, _ := os.MkdirTemp("", "vkf-bd-")
		d, err := measureDevice(ctx, binDir, dir, log)
		if err != nil {
			fail(fmt.Errorf("device: %w (logs in %s)", err, dir))
		}
		os.RemoveAll(dir) // only now: podman's mounts live under dir while it runs
		table += "\n### Device agent\n\n" + d.table()
	}
	fmt.Println(table)
	if *out != "" {
		if err := writeDoc(*out, table); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

type runConfig struct {
	N      int
	Dir    string
	CPBin  string
	BinDir string
	Idle   time.Duration
	Log    *slog.Logger
	// Baseline measures the control plane's own rollout first.
	Baseline bool
	// Rollout measures vk-fleet's DaemonSet rollout.
	Rollout bool
	// Profiles, if set, receives heap-<n>.pprof and goroutine-<n>.txt.
	Profiles string
	// KCMFeatureGates, if set, is kube-controller-manager's --feature-gates.
	KCMFeatureGates string
	// VKFleetEnv is added to vk-fleet's environment.
	VKFleetEnv []string
}

// writeDoc replaces the results section of docs/benchmarks.md.
func writeDoc(path, table string) error {
	const begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s lacks the %s … %s markers", path, begin, end)
	}
	host, _ := os.Hostname()
	stamp := fmt.Sprintf("Measured %s on %s (%d cores).\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, numCPU())
	s = s[:i+len(begin)] + "\n" + stamp + table + "\n" + s[j:]
	return os.WriteFile(filepath.Clean(path), []byte(s), 0o644)
}
