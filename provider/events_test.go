package provider

import (
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/record"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Device reports turn into the Events a kubelet records, once per change.
func TestDeviceReportsBecomeKubeletEvents(t *testing.T) {
	p := testProvider(t)
	rec := record.NewFakeRecorder(100)
	p.recorder = rec
	pod := basePod()
	now := time.Now()
	earlier := now.Add(-time.Hour)
	running := &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now}}}
	later := now.Add(time.Second)
	exited := &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateTerminated, Reason: "Completed",
		StartedAt: &now, FinishedAt: &now}}}
	crashLoop := func(started *time.Time) *bridge.PodStatus {
		return &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "CrashLoopBackOff",
			RestartCount: 1, LastTermination: &bridge.Termination{ExitCode: 1, Reason: "Error", StartedAt: started, FinishedAt: started}}}}
	}
	steps := []struct {
		old, cur *bridge.PodStatus
		want     []string
	}{
		{nil, running, []string{"Normal Started Started container c"}},
		{running, running, nil},
		// A provider that restarts does not announce old starts again.
		{nil, &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &earlier}}}, nil},
		{running, &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "ErrImagePull", Message: "manifest unknown"}}},
			[]string{`Warning Failed Failed to pull image "img:1": manifest unknown`}},
		{&bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "ErrImagePull", Message: "manifest unknown"}}},
			&bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "ImagePullBackOff", Message: "manifest unknown"}}},
			[]string{`Normal BackOff Back-off pulling image "img:1"`}},
		// A back-off seen first says the failure too.
		{nil, &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "ImagePullBackOff", Message: "dial tcp: refused"}}},
			[]string{`Warning Failed Failed to pull image "img:1": dial tcp: refused`, `Normal BackOff Back-off pulling image "img:1"`}},
		{nil, &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "CrashLoopBackOff"}}},
			[]string{"Warning BackOff Back-off restarting failed container c in pod web_ns(uid-1)"}},
		{running, &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now, ProbeFailure: "Readiness probe failed: HTTP probe failed with statuscode: 503"}}},
			[]string{"Warning Unhealthy Readiness probe failed: HTTP probe failed with statuscode: 503"}},
		{nil, &bridge.PodStatus{Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &earlier, RestartCount: 2,
			LastTermination: &bridge.Termination{Reason: "OOMKilled", ExitCode: 137, FinishedAt: &earlier}}}},
			[]string{"Warning OOMKilled Container c was killed for using more memory than its limit (OOMKilled); restart count 2"}},
		// A container that exited before the device's first report of it
		// started all the same (kubelet's Started, which e2e waits for).
		{nil, exited, []string{"Normal Started Started container c"}},
		{exited, exited, nil},
		{exited, crashLoop(&now), []string{"Warning BackOff Back-off restarting failed container c in pod web_ns(uid-1)"}},
		// A restart that ended between two reports.
		{crashLoop(&now), crashLoop(&later), []string{"Normal Started Started container c"}},
	}
	// virtual-kubelet's own chatter is dropped, its failures kept.
	quiet := kubeletLikeRecorder{rec}
	quiet.Event(pod, "Normal", "ProviderCreateSuccess", "Create pod in provider successfully")
	quiet.Event(pod, "Warning", "ProviderCreateFailed", "boom")
	if got := <-rec.Events; got != "Warning ProviderCreateFailed boom" || len(rec.Events) != 0 {
		t.Errorf("virtual-kubelet's events through the filter: %q, %d more", got, len(rec.Events))
	}
	for i, s := range steps {
		p.podEvents(pod, s.old, s.cur)
		var got []string
		for len(rec.Events) > 0 {
			got = append(got, <-rec.Events)
		}
		if strings.Join(got, "\n") != strings.Join(s.want, "\n") {
			t.Errorf("step %d: events\n%s\nwant\n%s", i, strings.Join(got, "\n"), strings.Join(s.want, "\n"))
		}
	}
}
