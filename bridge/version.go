package bridge

// ProtocolVersion is the version of the wire protocol spoken by this build.
//
// Every change to a message, subject or key adds a line here and bumps the
// number. Peers accept messages of any version: unknown fields are ignored and
// new fields are optional, so the number tells a peer what the other side can
// do, not whether it can parse a message.
//
//   - 1 (2026-11-27): first version. Heartbeat with Inventory, Workload,
//     PodStatus; KV buckets vkf-workloads and vkf-status; subject vkf.dev.<device>.hb.
//   - 2 (2026-11-27): enrollment: EnrollRequest and EnrollResponse on vkf.enroll,
//     Error with codes. Devices use the inbox prefix _INBOX_<device>.
//   - 3 (2026-11-28): DesiredIndex at <device>._.index in vkf-workloads: a device
//     removes a pod it was not told to delete only when a provider that has read
//     Kubernetes says, in the index, that the pod is not wanted. Devices recreate
//     containers only when RestartHash changes.
//   - 4 (2026-11-28): kubelet API sessions: LogRequest on _INBOX_<device>.kubelet,
//     StreamFrames on vkf.dev.<device>.session.<id>, SessionControl (credit,
//     cancel, keepalive) on _INBOX_<device>.kubelet.<id>.
//   - 5 (2026-11-28): sessions for exec, attach, port-forward and stats:
//     SessionRequest (LogRequest renamed, same JSON) with kind, command,
//     stdin/stdout/stderr/tty and port; StreamFrame gains stream, exit and
//     credit (the device grants the provider input credit); SessionControl
//     gains seq, data, eof and resize (the provider's input); error code
//     Gone for messages of a session the device does not know; StatsReport.
//   - 6 (2026-11-28): pod semantics: Workload.InitContainers (sidecars with
//     Container.RestartPolicy Always), Container startup/readiness/liveness
//     probes run on the device; PodStatus.InitContainers and Initialized,
//     ContainerStatus.Started.
//     Container.PullAuth: registry credentials from the pod's image pull
//     secrets that match the container's image, tried in order.
//     (2026-11-28) Security context and pod networking: Security gains
//     runAsNonRoot, supplementalGroups, noNewPrivileges, seccomp(+Profile),
//     appArmor(+Profile), seLinux, unmaskedProc; Workload gains hostPID,
//     hostIPC, shareProcessNamespace, dns, hostAliases, sysctls, fsGroup.
//     The provider refuses them for devices older than v6.
//     Container postStart/preStop hooks (Handler: exec, httpGet, sleep) and
//     terminationMessagePath/Policy; Termination.Message.
//     (2026-11-28) Volumes: Volume.FileModes (defaultMode, item modes),
//     Volume.Medium "Memory" (tmpfs) with SizeLimitBytes, Mount.SubPath;
//     Files volumes are written atomically (..data symlink swap) and carry
//     downwardAPI and projected contents too.
//     (2026-11-28) Resources: Resources.cpuRequestMilli (CPU shares);
//     Inventory gains ephemeralStorageBytes, reserved and evictionReserved
//     (ResourceAmounts: what the device keeps and what its hard eviction
//     thresholds hold back); Heartbeat.pressure (NodePressure: memory,
//     disk, pid, signals). Older peers ignore them.
//   - 7 (2026-11-28): quiet heartbeats: Heartbeat.State (StateHash of the
//     inventory, runtime error and pressure); a device sends them in full only
//     when State changed, after a reconnect, or when asked on
//     InventoryRequestSubject (_INBOX_<device>.inventory), and otherwise only
//     seq, pods and state, once DesiredIndex.ProviderProtocol says the
//     provider speaks 7. Device and time are left out of quiet heartbeats.
//     Desired state without a consumer per device: the provider tells a device
//     the key it changed on DesiredSubject (_INBOX_<device>.desired), and the
//     device reads it with a direct get; it reads all its keys (the index,
//     then every pod it stores or the index lists) at start, after every
//     reconnect and every few minutes. Against an older provider (an index
//     without providerProtocol, or none) it watches its keys as before.
//     ContainerStatus.probeFailure: what the failing probe said, for the
//     provider's Unhealthy events.
//     (2026-11-28) A Volume with neither emptyDir nor hostPath (its files
//     left out because there are none) is a Files volume with no files
//     (Volume.IsFiles): devices empty it in place, as kubelet does when an
//     optional ConfigMap or Secret is deleted. Older devices kept the last
//     files, and made it a writable empty directory at creation.
//   - 8 (2026-11-28): Workload.activeDeadlineSeconds: the device stops the
//     pod's containers that long after it accepted the pod, and reports it
//     Failed with reason DeadlineExceeded. The provider refuses such pods
//     for older devices. Workload.ephemeralContainers (kubectl debug): started
//     in the running pod, never restarted; PodStatus.ephemeralContainers.
//     Volume.image (ImageVolume): an OCI image's file system, read-only.
//     EnvVar.FieldRef: env from the downward API fields status.podIP(s) and
//     status.hostIP(s), which the device fills in when it creates the
//     container (the pod's IP once its infra container runs). The provider
//     refuses such pods for devices older than 8.
const ProtocolVersion = 8
