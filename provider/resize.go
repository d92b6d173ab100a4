package provider

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// resizeMessage is the PodResizePending message of a pod whose containers'
// resources were changed in place.
const resizeMessage = "in-place resize is not applied on devices: the containers keep the resources they were started with (%s); " +
	"delete the pod (its DaemonSet or Deployment creates it again) to run it with the new ones"

// holdResize keeps the resources that the device's containers were started
// with (from published, the workload the device has) in w when w changes
// nothing else that restarts them: a device applies a container's
// resources when it creates the container, and an in-place resize must not
// silently claim otherwise. It returns what the resize asked for, for the
// pod's PodResizePending condition, or "" when there is none. A change that
// re-creates the containers (a new image) takes the new resources with it.
func holdResize(w *bridge.Workload, published []byte) string {
	if published == nil {
		return ""
	}
	old, err := bridge.Decode[bridge.Workload](published)
	if err != nil || bridge.RestartHash(old) != bridge.RestartHash(w) {
		return ""
	}
	var changes []string
	hold := func(cs []bridge.Container, olds []bridge.Container) {
		for i := range cs {
			for _, o := range olds {
				if o.Name == cs[i].Name && o.Resources != cs[i].Resources {
					changes = append(changes, fmt.Sprintf("container %s: %s", cs[i].Name, describeResources(o.Resources, cs[i].Resources)))
					cs[i].Resources = o.Resources
				}
			}
		}
	}
	hold(w.InitContainers, old.InitContainers)
	hold(w.Containers, old.Containers)
	if len(changes) == 0 {
		return ""
	}
	return fmt.Sprintf(resizeMessage, strings.Join(changes, "; "))
}

// describeResources says how resources change from a to b: "cpu limit 100m
// → 200m, memory limit none → 64Mi".
func describeResources(a, b bridge.Resources) string {
	milli := func(v int64) string {
		if v == 0 {
			return "none"
		}
		return resource.NewMilliQuantity(v, resource.DecimalSI).String()
	}
	bytes := func(v int64) string {
		if v == 0 {
			return "none"
		}
		return resource.NewQuantity(v, resource.BinarySI).String()
	}
	var out []string
	if a.CPURequestMilli != b.CPURequestMilli {
		out = append(out, "cpu request "+milli(a.CPURequestMilli)+" → "+milli(b.CPURequestMilli))
	}
	if a.CPULimitMilli != b.CPULimitMilli {
		out = append(out, "cpu limit "+milli(a.CPULimitMilli)+" → "+milli(b.CPULimitMilli))
	}
	if a.MemoryLimitBytes != b.MemoryLimitBytes {
		out = append(out, "memory limit "+bytes(a.MemoryLimitBytes)+" → "+bytes(b.MemoryLimitBytes))
	}
	return strings.Join(out, ", ")
}
