//go:build remote

package podman

import (
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// An image volume mounts an image's file system read-only; an ephemeral
// container joins the running pod, sees its volumes, and leaves the pod's
// container as it was.
func TestImageVolumeAndEphemeralContainer(t *testing.T) {
	e := setup(t)
	main := bridge.Container{
		Name: "main", Image: e.image,
		Command: []string{"sh", "-c", "cat /img/bin/busybox > /dev/null && echo seen > /shared/img; touch /img/x 2> /dev/null || echo ro > /shared/img-ro; exec sleep 3600"},
		Mounts:  []bridge.Mount{{Volume: "img", Path: "/img"}, {Volume: "shared", Path: "/shared"}},
	}
	w := workload("imgvol", main)
	w.Volumes = []bridge.Volume{
		{Name: "img", Image: &bridge.ImageVolume{Reference: e.image, PullPolicy: bridge.PullNever}},
		{Name: "shared", EmptyDir: true},
	}
	create(t, e.rt, w, "h")
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "img")); got != "seen\n" {
		t.Errorf("image volume content: %q", got)
	}
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "img-ro")); got != "ro\n" {
		t.Errorf("image volume is not read-only: %q", got)
	}
	before := waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)

	dbg := bridge.Container{Name: "debugger", Image: e.image,
		Command: []string{"sh", "-c", "echo polo > /shared/debugger; exec sleep 3600"},
		Mounts:  []bridge.Mount{{Volume: "shared", Path: "/shared"}, {Volume: "img", Path: "/img"}}}
	w.EphemeralContainers = []bridge.Container{dbg}
	if err := e.rt.StartEphemeral(t.Context(), w, &dbg); err != nil {
		t.Fatalf("StartEphemeral: %v", err)
	}
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "debugger")); got != "polo\n" {
		t.Errorf("the ephemeral container wrote %q", got)
	}
	waitState(t, e.rt, w.UID, "debugger", nodeagent.ContainerRunning)
	after := waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	if after.ID != before.ID || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("the pod's container changed: %+v, was %+v", after, before)
	}
}
