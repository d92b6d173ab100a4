package provider

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Support levels of a pod spec field on a device.
const (
	// Honoured: the device behaves as a kubelet does.
	Honoured = "honoured"
	// Limited: honoured, with the difference the note gives.
	Limited = "honoured with limits"
	// Refused: a pod that sets the field is not run; the Pod says why.
	Refused = "refused"
	// ControlPlane: read by the API server, scheduler or controllers,
	// never by a kubelet; nothing for a device to do.
	ControlPlane = "control plane"
)

// FieldSupport says what vk-fleet does with one field of a pod spec.
type FieldSupport struct {
	// Path is the field's JSON path: "spec.hostPID",
	// "spec.containers[].ports", "spec.containers[].securityContext.privileged".
	Path  string
	Level string
	Note  string
}

// PodFields lists every field of corev1.PodSpec, Container,
// SecurityContext and PodSecurityContext with what a device does with it.
// TestEveryPodFieldIsClassified fails when Kubernetes adds a field that is
// not listed, so no new field can slip through unnoticed; docs/pod-support.md
// is generated from this list.
var PodFields = []FieldSupport{
	{"spec.volumes", Limited, "emptyDir (medium Memory as tmpfs with sizeLimit; disk sizeLimit not enforced), hostPath, configMap, secret, downwardAPI, projected (configMap, secret, downwardAPI) and image volumes (read-only, pulled with the pod's pull secrets; device-agent protocol 8); other volume types and serviceAccountToken projections are refused"},
	{"spec.initContainers", Honoured, "run in order to success before the app containers; restartPolicy Always makes a native sidecar. After a device reboot the init containers are not run again (their work persists in the pod's volumes)"},
	{"spec.containers", Honoured, ""},
	{"spec.ephemeralContainers", Honoured, "kubectl debug: started in the running pod, never restarted, no container of the pod restarts (device-agent protocol 8); exec, attach and logs reach them"},
	{"spec.restartPolicy", Honoured, "containers restart in place (podman restart), with kubelet's back-off"},
	{"spec.terminationGracePeriodSeconds", Honoured, "preStop, then SIGTERM, SIGKILL after the grace period"},
	{"spec.activeDeadlineSeconds", Honoured, "enforced by the device from the pod's startTime, also while it is offline (device-agent protocol 8)"},
	{"spec.dnsPolicy", Limited, "Default and None as a kubelet; ClusterFirst uses the device's resolv.conf (a device has no cluster DNS), as a kubelet without clusterDNS"},
	{"spec.nodeSelector", ControlPlane, ""},
	{"spec.serviceAccountName", ControlPlane, "the pod's image pull secrets come from it through the API server's admission"},
	{"spec.serviceAccount", ControlPlane, "deprecated alias of serviceAccountName"},
	{"spec.automountServiceAccountToken", Limited, "the service account token volume is not mounted on devices (they do not reach the API server)"},
	{"spec.nodeName", ControlPlane, "the device Node"},
	{"spec.hostNetwork", Honoured, ""},
	{"spec.hostPID", Honoured, ""},
	{"spec.hostIPC", Honoured, ""},
	{"spec.shareProcessNamespace", Limited, "PID 1 is podman's infra process (catatonit), not pause"},
	{"spec.securityContext", Honoured, "see the securityContext fields below"},
	{"spec.imagePullSecrets", Honoured, "dockerconfigjson and dockercfg, matched per image as kubelet's keyring does"},
	{"spec.hostname", Honoured, ""},
	{"spec.subdomain", Limited, "ignored with a note: a device has no cluster DNS"},
	{"spec.affinity", ControlPlane, ""},
	{"spec.schedulerName", ControlPlane, ""},
	{"spec.tolerations", ControlPlane, "device Nodes carry the virtual-kubelet.io/provider=vk-fleet:NoSchedule taint"},
	{"spec.hostAliases", Honoured, ""},
	{"spec.priorityClassName", ControlPlane, ""},
	{"spec.priority", ControlPlane, ""},
	{"spec.dnsConfig", Honoured, ""},
	{"spec.readinessGates", Honoured, "the Pod is Ready only when every gate's condition is True"},
	{"spec.runtimeClassName", Refused, "RuntimeClass handlers are not available on devices"},
	{"spec.enableServiceLinks", Limited, "the service environment variables are set, but ClusterIPs are not reachable from a device"},
	{"spec.preemptionPolicy", ControlPlane, ""},
	{"spec.overhead", ControlPlane, "counted by the scheduler; not enforced on the device"},
	{"spec.topologySpreadConstraints", ControlPlane, ""},
	{"spec.setHostnameAsFQDN", Limited, "refused with a subdomain (no cluster domain on a device)"},
	{"spec.os", Limited, "linux only; os.name windows is refused"},
	{"spec.hostUsers", Refused, "hostUsers false (user namespaces) is not supported on devices yet"},
	{"spec.schedulingGates", ControlPlane, ""},
	{"spec.resourceClaims", Refused, "dynamic resource allocation is not available on devices"},
	{"spec.resources", Refused, "pod-level resources are not supported on devices: set requests and limits on each container"},
	{"spec.hostnameOverride", Honoured, "the pod's hostname"},
	{"spec.schedulingGroup", ControlPlane, ""},
	{"spec.evictionResponders", ControlPlane, ""},

	{"spec.containers[].name", Honoured, ""},
	{"spec.containers[].image", Honoured, "a change of image recreates the pod's containers, as a kubelet restarts the container"},
	{"spec.containers[].command", Honoured, ""},
	{"spec.containers[].args", Honoured, ""},
	{"spec.containers[].workingDir", Honoured, ""},
	{"spec.containers[].ports", Limited, "hostPort is published on the device; SCTP is refused"},
	{"spec.containers[].envFrom", Honoured, "resolved by vk-fleet when the pod starts; later edits do not change it, as with a kubelet"},
	{"spec.containers[].env", Honoured, "resolved by vk-fleet with kubelet's rules (envFrom, `$(VAR)`, configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef, service variables); `status.podIP(s)`/`status.hostIP(s)` filled in by the device (agent protocol 8); `$(VAR)` referring to those is refused"},
	{"spec.containers[].resources", Limited, "CPU and memory requests and limits; ephemeral-storage limits count for scheduling but are not enforced"},
	{"spec.containers[].resizePolicy", Limited, "in-place resize is not applied on devices: the API server refuses it for a running pod (\"node without support for resize\"); a pod resized before its containers run reports PodResizePending (Infeasible) and starts them with the resources it was created with; new resources take effect when the pod is recreated"},
	{"spec.containers[].restartPolicy", Honoured, "Always on an init container makes a native sidecar"},
	{"spec.containers[].restartPolicyRules", Refused, "container restart rules are not supported on devices yet"},
	{"spec.containers[].volumeMounts", Honoured, "subPath and subPathExpr too; a subPath of a configMap or secret volume does not follow updates, as with a kubelet"},
	{"spec.containers[].volumeDevices", Refused, "block volumes are not available on devices"},
	{"spec.containers[].livenessProbe", Honoured, "exec, httpGet, tcpSocket and grpc run on the device, inside the pod (they keep working offline). As a kubelet's, an exec probe's `timeoutSeconds` times the command from its start, and a probe the runtime could not start (podman unreachable or slow to create the session) counts as neither success nor failure, so a busy podman never restarts a healthy container"},
	{"spec.containers[].readinessProbe", Honoured, "exec, httpGet, tcpSocket and grpc run on the device, inside the pod (they keep working offline)"},
	{"spec.containers[].startupProbe", Honoured, "exec, httpGet, tcpSocket and grpc run on the device, inside the pod (they keep working offline)"},
	{"spec.containers[].lifecycle", Limited, "postStart and preStop with exec, httpGet or sleep; tcpSocket hooks and stopSignal are refused. postStart runs beside the next container's start rather than before it"},
	{"spec.containers[].terminationMessagePath", Honoured, ""},
	{"spec.containers[].terminationMessagePolicy", Honoured, ""},
	{"spec.containers[].imagePullPolicy", Limited, "Always falls back to a local copy of the image when the pull fails (devices are often offline)"},
	{"spec.containers[].securityContext", Honoured, "see the securityContext fields below"},
	{"spec.containers[].stdin", Honoured, ""},
	{"spec.containers[].stdinOnce", Limited, "podman closes a container's stdin when the first attach that sent input ends, whatever stdinOnce says"},
	{"spec.containers[].tty", Honoured, ""},

	{"spec.containers[].securityContext.capabilities", Limited, "podman's default set (11 capabilities) instead of containerd's (14)"},
	{"spec.containers[].securityContext.privileged", Honoured, ""},
	{"spec.containers[].securityContext.seLinuxOptions", Honoured, "passed to podman; no effect on devices without SELinux, as with a kubelet"},
	{"spec.containers[].securityContext.windowsOptions", Limited, "ignored with a note: devices run Linux"},
	{"spec.containers[].securityContext.runAsUser", Honoured, ""},
	{"spec.containers[].securityContext.runAsGroup", Honoured, ""},
	{"spec.containers[].securityContext.runAsNonRoot", Honoured, "kubelet's CreateContainerConfigError messages"},
	{"spec.containers[].securityContext.readOnlyRootFilesystem", Honoured, ""},
	{"spec.containers[].securityContext.allowPrivilegeEscalation", Honoured, ""},
	{"spec.containers[].securityContext.procMount", Honoured, ""},
	{"spec.containers[].securityContext.seccompProfile", Limited, "no profile means podman's default (as a kubelet with --seccomp-default); Localhost profiles come from <state-dir>/seccomp on the device"},
	{"spec.containers[].securityContext.appArmorProfile", Honoured, ""},

	{"spec.securityContext.seLinuxOptions", Honoured, "passed to podman"},
	{"spec.securityContext.windowsOptions", Limited, "ignored with a note: devices run Linux"},
	{"spec.securityContext.runAsUser", Honoured, ""},
	{"spec.securityContext.runAsGroup", Honoured, ""},
	{"spec.securityContext.runAsNonRoot", Honoured, ""},
	{"spec.securityContext.supplementalGroups", Honoured, ""},
	{"spec.securityContext.supplementalGroupsPolicy", Limited, "Merge only; Strict is refused (podman merges the image's groups)"},
	{"spec.securityContext.fsGroup", Honoured, "owns emptyDir, configMap, secret and projected volumes"},
	{"spec.securityContext.sysctls", Limited, "namespaced sysctls only; others are refused"},
	{"spec.securityContext.fsGroupChangePolicy", Limited, "volumes are created for each pod, so ownership is always set (Always)"},
	{"spec.securityContext.seccompProfile", Limited, "as the container field"},
	{"spec.securityContext.appArmorProfile", Honoured, ""},
	{"spec.securityContext.seLinuxChangePolicy", Limited, "ignored with a note: volumes are created for each pod and labelled by podman"},
}

// checkPodFields refuses, or notes, the pod spec fields of PodFields that a
// device does not run and that no other check covers.
func checkPodFields(spec *corev1.PodSpec, refuse, ignore func(string, ...any)) {
	if spec.RuntimeClassName != nil && *spec.RuntimeClassName != "" {
		refuse("runtimeClassName %q: RuntimeClass handlers are not available on devices", *spec.RuntimeClassName)
	}
	if spec.OS != nil && spec.OS.Name != corev1.Linux {
		refuse("os.name %q: devices run Linux", spec.OS.Name)
	}
	if spec.HostUsers != nil && !*spec.HostUsers {
		refuse("hostUsers false (user namespaces) is not supported on devices yet")
	}
	if len(spec.ResourceClaims) > 0 {
		refuse("resourceClaims: dynamic resource allocation is not available on devices")
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if len(c.RestartPolicyRules) > 0 {
				refuse("container %q: restartPolicyRules are not supported on devices yet", c.Name)
			}
		}
	}
}

// PodSupportMarkdown renders PodFields as docs/pod-support.md.
func PodSupportMarkdown() string {
	var b strings.Builder
	b.WriteString(`# Pod spec support on devices

Every field of a Pod's spec, its containers and their security contexts,
with what a device does with it. Generated from ` + "`provider.PodFields`" + `
(` + "`VKF_UPDATE_DOCS=1 go test ./provider -run TestPodSupportDoc`" + `); the test
` + "`TestEveryPodFieldIsClassified`" + ` fails when Kubernetes adds a field this list
does not classify.

- **honoured**: the device behaves as a kubelet does.
- **honoured with limits**: honoured, with the difference noted.
- **refused**: a pod that sets the field is not run; the Pod's status says
  why (reason ` + "`UnsupportedPodSpec`" + `), and an Event is recorded.
- **control plane**: read by the API server, scheduler or controllers, never
  by a kubelet.

Fields that are accepted but not honoured show on the Pod in the condition
` + "`vk-fleet.io/IgnoredFields`" + `.

| field | on a device | notes |
|---|---|---|
`)
	for _, f := range PodFields {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Path, f.Level, f.Note)
	}
	return b.String()
}
