package nodeagent

import (
	"reflect"
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
)

func TestFillFieldRefs(t *testing.T) {
	w := &bridge.Workload{
		InitContainers: []bridge.Container{{Name: "init", Env: []bridge.EnvVar{{Name: "H", FieldRef: bridge.FieldHostIP}}}},
		Containers: []bridge.Container{{Name: "main", Env: []bridge.EnvVar{
			{Name: "A", Value: "1"}, {Name: "HS", FieldRef: bridge.FieldHostIPs},
			{Name: "P", FieldRef: bridge.FieldPodIP}, {Name: "PS", FieldRef: bridge.FieldPodIPs},
		}}},
	}
	before := *w
	got := FillFieldRefs(w, hostFieldValues("192.0.2.5", false))
	if !reflect.DeepEqual(*w, before) || w.Containers[0].Env[1].Value != "" || w.InitContainers[0].Env[0].Value != "" {
		t.Fatalf("the workload given was changed: %+v", w)
	}
	wantMain := []bridge.EnvVar{{Name: "A", Value: "1"}, {Name: "HS", Value: "192.0.2.5"},
		{Name: "P", FieldRef: bridge.FieldPodIP}, {Name: "PS", FieldRef: bridge.FieldPodIPs}}
	if !reflect.DeepEqual(got.Containers[0].Env, wantMain) || got.InitContainers[0].Env[0] != (bridge.EnvVar{Name: "H", Value: "192.0.2.5"}) {
		t.Errorf("filled = %+v / %+v", got.InitContainers[0].Env, got.Containers[0].Env)
	}
	if u := UnfilledFieldRef(got); u != "container main: env P (status.podIP)" {
		t.Errorf("unfilled = %q", u)
	}

	// On the host's network the pod's IP is the host's.
	got = FillFieldRefs(w, hostFieldValues("192.0.2.5", true))
	if u := UnfilledFieldRef(got); u != "" || got.Containers[0].Env[2].Value != "192.0.2.5" || got.Containers[0].Env[3].Value != "192.0.2.5" {
		t.Errorf("host network: unfilled %q, env %+v", u, got.Containers[0].Env)
	}
	// Nothing to fill: the same workload.
	plain := &bridge.Workload{Containers: []bridge.Container{{Name: "c", Env: []bridge.EnvVar{{Name: "A", Value: "1"}}}}}
	if FillFieldRefs(plain, hostFieldValues("192.0.2.5", true)) != plain || FillFieldRefs(w, nil) != w {
		t.Error("a workload without variables to fill was copied")
	}
}
