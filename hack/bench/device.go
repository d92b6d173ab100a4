package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/test/framework/bincache"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// The device measurement: what a Pi has to hold (the release binaries, per
// platform) and what the agent costs it in memory with a few pods running.
const (
	// devicePods is how many pods the measured agent runs.
	devicePods = 10
	// deviceSettle is how long the agent runs its pods before its
	// steady-state RSS is read.
	deviceSettle = 30 * time.Second
	// deviceIdleAfter is how long after its start the idle agent is
	// measured: past the start-up, whose memory the agent gives back 30 s
	// after it starts (cmd/device-agent startupRelease).
	deviceIdleAfter = 45 * time.Second
	// deviceName is the measured device.
	deviceName = "bench-pi"
	// deviceBuildTags are the release build tags (hack/lib.sh VKF_TAGS).
	deviceBuildTags = devcluster.BuildTags
)

// devicePlatforms are the release platforms measured (GOARCH, GOARM).
var devicePlatforms = []struct{ goarch, goarm string }{{"arm64", ""}, {"arm", "7"}}

// deviceBinaries are the binaries a device needs to enroll and run pods:
// /usr/bin/fleetctl on a device is a link to device-agent (internal/debpkg).
var deviceBinaries = []string{"device-agent"}

// deviceSize is the size of the device binaries of one platform.
type deviceSize struct {
	Platform string
	Bytes    map[string]int64
	Total    int64
}

// deviceResult is what measureDevice found.
type deviceResult struct {
	Sizes []deviceSize
	// Pods is how many pods ran; Restarts counts their containers'
	// restarts during the measurement (there should be none).
	Pods, Restarts int
	// The agent's memory: Idle with its Node Ready and no pods (once
	// deviceIdleAfter has passed since it started), Steady after running
	// the pods for Settle; Steady.HWM is the peak since it started.
	Idle, Steady deviceMemory
	Settle       time.Duration
	// Platform is where the measured agent ran.
	Platform string
}

// deviceMemory is a reading of /proc/<pid>/status, in bytes: RSS is Anon
// (the agent's own: heap, stacks, written data) plus File (the pages of
// its executable it has mapped, shared with the page cache); HWM is the
// highest RSS since the process started.
type deviceMemory struct{ RSS, Anon, File, HWM int64 }

// measureDevice cross-compiles the device binaries as releases are built
// and reports their sizes, then starts a development cluster (control
// plane, podman with storage of its own under dir, vk-fleet) with one
// device whose agent is a release build for this machine, runs devicePods
// pods on it and reports the agent's RSS. binDir holds vk-fleet and
// fleetctl (hack/bench.sh's VKF_BIN_DIR); the control plane comes from
// VKF_CONTROLPLANE_BIN or the cache (controlplane.BinDir). It needs go on
// PATH and runs from within the module.
func measureDevice(ctx context.Context, binDir, dir string, log *slog.Logger) (deviceResult, error) {
	var r deviceResult
	root, err := bincache.ModuleRoot()
	if err != nil {
		return r, err
	}
	for _, p := range devicePlatforms {
		s, err := deviceBuildSizes(ctx, root, filepath.Join(dir, "dist"), p.goarch, p.goarm)
		if err != nil {
			return r, err
		}
		log.Info("device binaries", "platform", s.Platform, "bytes", s.Total)
		r.Sizes = append(r.Sizes, s)
	}

	// The measured agent is a release build for this machine; vk-fleet and
	// the operator's fleetctl are binDir's.
	bin := filepath.Join(dir, "bin")
	if err := deviceBuild(ctx, root, bin, runtime.GOARCH, "", "device-agent"); err != nil {
		return r, err
	}
	for _, b := range []string{"vk-fleet", "fleetctl"} {
		src, err := filepath.Abs(filepath.Join(binDir, b))
		if err != nil {
			return r, err
		}
		if err := os.Symlink(src, filepath.Join(bin, b)); err != nil {
			return r, fmt.Errorf("linking %s: %w", b, err)
		}
	}
	// devcluster takes its binaries from $VKF_BIN_DIR.
	prev, had := os.LookupEnv(devcluster.EnvBinDir)
	if err := os.Setenv(devcluster.EnvBinDir, bin); err != nil {
		return r, err
	}
	defer func() {
		if had {
			os.Setenv(devcluster.EnvBinDir, prev)
		} else {
			os.Unsetenv(devcluster.EnvBinDir)
		}
	}()

	log.Info("starting a development cluster for the device measurement", "dir", dir)
	c, err := devcluster.Start(ctx, devcluster.Config{Dir: filepath.Join(dir, "cluster"), Logger: log})
	if err != nil {
		return r, err
	}
	defer c.Stop()
	if err := c.Enroll(ctx, deviceName); err != nil {
		return r, err
	}
	// The agent's log level and resync interval of production (devcluster
	// starts agents for fast tests); heartbeats every 5s, within the 8s
	// heartbeat timeout of devcluster's vk-fleet.
	if err := c.StartAgentWith(ctx, deviceName, "--log-level", "info", "--heartbeat-interval", "5s", "--resync-interval", "15s"); err != nil {
		return r, err
	}
	started := time.Now()
	pid := c.Agent(deviceName).PID()
	if err := deviceWait(ctx, 2*time.Minute, "the device's Node to be Ready", func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, deviceName, metav1.GetOptions{})
		return err == nil && devcluster.NodeReady(n) == corev1.ConditionTrue, nil
	}); err != nil {
		return r, fmt.Errorf("%w\nagent log:\n%s", err, c.Agent(deviceName).Tail(30))
	}
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(time.Until(started.Add(deviceIdleAfter))):
	}
	r.Idle = deviceRSS(pid)

	ns := "bench-device"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return r, fmt.Errorf("creating namespace: %w", err)
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, deviceDeployment(ns, c.Image), metav1.CreateOptions{}); err != nil {
		return r, fmt.Errorf("creating deployment: %w", err)
	}
	running := func(ctx context.Context) (int, int, error) {
		l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0, 0, err
		}
		n, restarts := 0, 0
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == deviceName {
				n++
			}
			for _, cs := range p.Status.ContainerStatuses {
				restarts += int(cs.RestartCount)
			}
		}
		return n, restarts, nil
	}
	if err := deviceWait(ctx, 5*time.Minute, fmt.Sprintf("%d pods to run on the device", devicePods), func(ctx context.Context) (bool, error) {
		n, _, err := running(ctx)
		return n == devicePods, err
	}); err != nil {
		return r, fmt.Errorf("%w\nagent log:\n%s", err, c.Agent(deviceName).Tail(30))
	}
	log.Info("device pods running; letting the agent settle", "pods", devicePods, "settle", deviceSettle)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(deviceSettle):
	}
	if c.Agent(deviceName).Exited() {
		return r, fmt.Errorf("the agent exited:\n%s", c.Agent(deviceName).Tail(30))
	}
	r.Settle, r.Platform = deviceSettle, "linux/"+runtime.GOARCH
	r.Steady = deviceRSS(pid)
	if r.Pods, r.Restarts, err = running(ctx); err != nil {
		return r, err
	}
	if r.Pods != devicePods {
		return r, fmt.Errorf("%d of %d pods still run after %v", r.Pods, devicePods, deviceSettle)
	}
	log.Info("device agent memory", "idle", r.Idle.RSS, "steady", r.Steady.RSS, "anon", r.Steady.Anon, "file", r.Steady.File,
		"peak", r.Steady.HWM, "restarts", r.Restarts)
	return r, nil
}

// deviceBuildSizes builds the device binaries for goarch (and goarm) as a
// release does into dir and returns their sizes.
func deviceBuildSizes(ctx context.Context, root, dir, goarch, goarm string) (deviceSize, error) {
	s := deviceSize{Platform: "linux/" + goarch, Bytes: map[string]int64{}}
	if goarm != "" {
		s.Platform += " (GOARM=" + goarm + ")"
	}
	out := filepath.Join(dir, "linux-"+goarch)
	if err := deviceBuild(ctx, root, out, goarch, goarm, deviceBinaries...); err != nil {
		return s, err
	}
	for _, b := range deviceBinaries {
		fi, err := os.Stat(filepath.Join(out, b))
		if err != nil {
			return s, err
		}
		s.Bytes[b] = fi.Size()
		s.Total += fi.Size()
	}
	return s, nil
}

// deviceBuild builds the commands bins into out: static, stripped,
// -trimpath, with the release tags (hack/release.sh).
func deviceBuild(ctx context.Context, root, out, goarch, goarm string, bins ...string) error {
	args := []string{"build", "-trimpath", "-tags", deviceBuildTags, "-ldflags", "-s -w", "-o", out + "/"}
	for _, b := range bins {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s for linux/%s: %w\n%s", strings.Join(bins, ", "), goarch, err, b)
	}
	return nil
}

// deviceDeployment is devicePods replicas of a sleeping busybox pinned to
// the measured device.
func deviceDeployment(ns, image string) *appsv1.Deployment {
	labels := map[string]string{"app": "bench-device"}
	replicas := int32(devicePods)
	grace := int64(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench-device"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": deviceName},
					Tolerations: []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpEqual,
						Value: "vk-fleet", Effect: corev1.TaintEffectNoSchedule}},
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name: "main", Image: image, Command: []string{"sleep", "86400"},
						ImagePullPolicy: corev1.PullIfNotPresent,
					}},
				},
			},
		},
	}
}

// deviceRSS reads a process's memory from /proc/<pid>/status.
func deviceRSS(pid int) deviceMemory {
	var m deviceMemory
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.RSS = kb * 1024
		case "RssAnon:":
			m.Anon = kb * 1024
		case "RssFile:":
			m.File = kb * 1024
		case "VmHWM:":
			m.HWM = kb * 1024
		}
	}
	return m
}

// deviceWait polls cond every half second until it holds or timeout passes.
func deviceWait(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, errors.Join(ctx.Err(), last))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// table renders the result as markdown.
func (d deviceResult) table() string {
	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	var sb strings.Builder
	sb.WriteString("| platform | " + strings.Join(deviceBinaries, " | ") + " | device total |\n")
	sb.WriteString("|---|" + strings.Repeat("---:|", len(deviceBinaries)) + "---:|\n")
	for _, s := range d.Sizes {
		sb.WriteString("| " + s.Platform + " | ")
		for _, b := range deviceBinaries {
			sb.WriteString(mb(s.Bytes[b]) + " | ")
		}
		sb.WriteString(mb(s.Total) + " |\n")
	}
	sb.WriteString("\n")
	fmt.Fprintf(&sb, "| device-agent on real podman (%s, release build) | RSS | anon | file |\n|---|---:|---:|---:|\n", d.Platform)
	row := func(what string, m deviceMemory) {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", what, mb(m.RSS), mb(m.Anon), mb(m.File))
	}
	row("Node Ready, no pods", d.Idle)
	row(fmt.Sprintf("%d pods running, after %v", d.Pods, d.Settle), d.Steady)
	fmt.Fprintf(&sb, "| peak since start (VmHWM) | %s | | |\n", mb(d.Steady.HWM))
	fmt.Fprintf(&sb, "\nContainer restarts during the run: %d. MB = 10^6 bytes; anon is the agent's own memory, file the\n"+
		"pages of its executable it has mapped (shared with the page cache).\n", d.Restarts)
	return sb.String()
}
