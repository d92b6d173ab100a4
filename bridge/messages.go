package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Inventory describes a device. It becomes the Node's nodeInfo, capacity and
// addresses.
type Inventory struct {
	Hostname        string   `json:"hostname,omitempty"`
	Architecture    string   `json:"architecture,omitempty"` // GOARCH spelling: amd64, arm64, arm
	OS              string   `json:"os,omitempty"`           // GOOS spelling: linux
	KernelVersion   string   `json:"kernelVersion,omitempty"`
	OSImage         string   `json:"osImage,omitempty"` // PRETTY_NAME of /etc/os-release
	MachineID       string   `json:"machineID,omitempty"`
	BootID          string   `json:"bootID,omitempty"`
	CPUs            int      `json:"cpus,omitempty"`
	MemoryBytes     int64    `json:"memoryBytes,omitempty"`
	MaxPods         int      `json:"maxPods,omitempty"`
	Addresses       []string `json:"addresses,omitempty"` // IP addresses, the first is the preferred one
	PodmanVersion   string   `json:"podmanVersion,omitempty"`
	AgentVersion    string   `json:"agentVersion,omitempty"`
	ProtocolVersion int      `json:"protocolVersion,omitempty"`

	// Since protocol 6.

	// EphemeralStorageBytes is the size of the filesystem of the agent's
	// state directory (kubelet's nodefs): the Node's ephemeral-storage.
	EphemeralStorageBytes int64 `json:"ephemeralStorageBytes,omitempty"`
	// Reserved is what the device keeps for its own system (the agent's
	// --system-reserved); resources it leaves zero take the provider's.
	Reserved *ResourceAmounts `json:"reserved,omitempty"`
	// EvictionReserved is what the device's hard eviction thresholds hold
	// back (memory.available, nodefs.available), resolved to amounts.
	EvictionReserved *ResourceAmounts `json:"evictionReserved,omitempty"`
}

// Heartbeat is published by a device at a fixed interval on
// HeartbeatSubject. The provider keeps the device's Node Ready and its lease
// renewed only while heartbeats arrive.
//
// Since protocol 7 most heartbeats are quiet: once the provider has said it
// speaks protocol 7 (DesiredIndex.ProviderProtocol), a device sends its
// inventory, runtime error and pressure only when they changed (State
// names them), after it reconnected, and when the provider asks on
// InventoryRequestSubject; other heartbeats carry Seq, Pods and State only.
type Heartbeat struct {
	// Device is the device's name; quiet heartbeats leave it out (the
	// subject names the device).
	Device string    `json:"device,omitempty"`
	Time   time.Time `json:"time,omitzero"`
	// Seq counts heartbeats since the agent started.
	Seq uint64 `json:"seq"`
	// IntervalSeconds is the interval the device promises between heartbeats.
	IntervalSeconds int       `json:"intervalSeconds,omitempty"`
	Inventory       Inventory `json:"inventory,omitzero"`
	// Pods is the number of pods the device runs.
	Pods int `json:"pods"`
	// RuntimeError is set while the container runtime cannot be reached.
	RuntimeError string `json:"runtimeError,omitempty"`
	// Pressure is the device's memory, disk and PID pressure (protocol 6;
	// nil from older agents).
	Pressure *NodePressure `json:"pressure,omitempty"`
	// State is StateHash of the inventory, runtime error and pressure the
	// device last reported in full (protocol 7).
	State string `json:"state,omitempty"`
}

// Full reports whether h carries the device's inventory, runtime error and
// pressure; a quiet heartbeat does not, and says only that the device is
// alive and which State it is in.
func (h *Heartbeat) Full() bool {
	return h.Device != "" || !h.Inventory.IsZero()
}

// IsZero reports whether i says nothing: it is then left out of a
// heartbeat (the omitzero of Heartbeat.Inventory).
func (i Inventory) IsZero() bool {
	return i.Hostname == "" && i.Architecture == "" && i.OS == "" && i.KernelVersion == "" && i.OSImage == "" &&
		i.MachineID == "" && i.BootID == "" && i.CPUs == 0 && i.MemoryBytes == 0 && i.MaxPods == 0 &&
		len(i.Addresses) == 0 && i.PodmanVersion == "" && i.AgentVersion == "" && i.ProtocolVersion == 0 &&
		i.EphemeralStorageBytes == 0 && i.Reserved == nil && i.EvictionReserved == nil
}

// StateHash names the inventory, runtime error and pressure of a full
// heartbeat: two heartbeats with the same hash describe the same Node.
func StateHash(h *Heartbeat) string {
	b, _ := json.Marshal(struct {
		Inventory    Inventory     `json:"i"`
		RuntimeError string        `json:"r,omitempty"`
		Pressure     *NodePressure `json:"p,omitempty"`
	}{h.Inventory, h.RuntimeError, h.Pressure})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Restart policies of a Workload, spelled as in Kubernetes.
const (
	RestartAlways    = "Always"
	RestartOnFailure = "OnFailure"
	RestartNever     = "Never"
)

// Image pull policies of a Container, spelled as in Kubernetes.
const (
	PullAlways       = "Always"
	PullIfNotPresent = "IfNotPresent"
	PullNever        = "Never"
)

// Workload is the desired state of one Kubernetes pod on a device, stored at
// PodKey(device, UID) in WorkloadsBucket. Every value the device needs is
// resolved by the provider: the device never reads Kubernetes objects.
type Workload struct {
	UID       string `json:"uid"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Generation changes whenever the provider changes this workload.
	Generation    int64       `json:"generation,omitempty"`
	RestartPolicy string      `json:"restartPolicy,omitempty"`
	HostNetwork   bool        `json:"hostNetwork,omitempty"`
	Hostname      string      `json:"hostname,omitempty"`
	Containers    []Container `json:"containers"`
	// InitContainers run in order, each to success, before Containers
	// start (v6). One with RestartPolicy Always is a sidecar: it only has
	// to start, keeps running beside Containers and stops after them.
	InitContainers []Container `json:"initContainers,omitempty"`
	// TerminationGracePeriodSeconds bounds how long containers get to stop.
	TerminationGracePeriodSeconds *int64   `json:"terminationGracePeriodSeconds,omitempty"`
	Volumes                       []Volume `json:"volumes,omitempty"`
	// EphemeralContainers (kubectl debug) are started in the running pod
	// when they appear, never restarted, and change nothing else: adding
	// one restarts no container (protocol 8).
	EphemeralContainers []Container `json:"ephemeralContainers,omitempty"`
	// ActiveDeadlineSeconds, when set, is how long the pod may be active,
	// from when the device accepted it (its startTime): then the device
	// stops its containers for good and reports the pod Failed, reason
	// DeadlineExceeded, as a kubelet does (protocol 8). A new value takes
	// effect without restarting anything.
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// Pod namespaces and networking (protocol 6). HostPID and HostIPC put
	// every container in the device's PID or IPC namespace;
	// ShareProcessNamespace gives the pod's containers one PID namespace.
	HostPID               bool        `json:"hostPID,omitempty"`
	HostIPC               bool        `json:"hostIPC,omitempty"`
	ShareProcessNamespace bool        `json:"shareProcessNamespace,omitempty"`
	DNS                   *DNS        `json:"dns,omitempty"`
	HostAliases           []HostAlias `json:"hostAliases,omitempty"`
	// Sysctls are namespaced kernel parameters set in the pod's namespaces
	// (protocol 6).
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// FSGroup owns the pod's emptyDir, ConfigMap and Secret volumes, and is
	// a supplementary group of every container (protocol 6).
	FSGroup *int64 `json:"fsGroup,omitempty"`
}

// DNS is a pod's resolver configuration (protocol 6). With Replace the
// pod's resolv.conf holds exactly these values (dnsPolicy None); otherwise
// they are appended to the device's own (a dnsConfig with any other
// policy), as kubelet does.
type DNS struct {
	Replace     bool     `json:"replace,omitempty"`
	Nameservers []string `json:"nameservers,omitempty"`
	Searches    []string `json:"searches,omitempty"`
	// Options are resolv.conf options, "name" or "name:value".
	Options []string `json:"options,omitempty"`
}

// HostAlias is an /etc/hosts entry of a pod (protocol 6).
type HostAlias struct {
	IP        string   `json:"ip"`
	Hostnames []string `json:"hostnames"`
}

// DesiredIndex lists every pod a device should run, stored at
// IndexKey(device) in WorkloadsBucket. The provider writes it only after it
// has read the pods bound to the device from Kubernetes, so it is the one
// statement a device trusts about absence: a pod the device runs or stores
// is removed when its key is deleted, or when an index does not list it and
// no key for it exists. A missing index (a new or lost bucket) means "not
// known yet", never "run nothing".
type DesiredIndex struct {
	Device  string   `json:"device"`
	PodUIDs []string `json:"podUIDs"`
	// WrittenAt is when the provider wrote the index.
	WrittenAt time.Time `json:"writtenAt"`
	// ProviderProtocol is the protocol version of the provider that wrote
	// the index (protocol 7; 0 from older providers): from 7 on, the device
	// sends quiet heartbeats.
	ProviderProtocol int `json:"providerProtocol,omitempty"`
}

// Container is one container of a Workload.
type Container struct {
	Name            string    `json:"name"`
	Image           string    `json:"image"`
	ImagePullPolicy string    `json:"imagePullPolicy,omitempty"`
	Command         []string  `json:"command,omitempty"`
	Args            []string  `json:"args,omitempty"`
	WorkingDir      string    `json:"workingDir,omitempty"`
	Env             []EnvVar  `json:"env,omitempty"`
	Ports           []Port    `json:"ports,omitempty"`
	Mounts          []Mount   `json:"mounts,omitempty"`
	Resources       Resources `json:"resources,omitempty"`
	Security        *Security `json:"security,omitempty"`
	TTY             bool      `json:"tty,omitempty"`
	Stdin           bool      `json:"stdin,omitempty"`
	// RestartPolicy of an init container: Always makes it a sidecar (v6).
	RestartPolicy string `json:"restartPolicy,omitempty"`
	// Probes the device runs (v6).
	Startup   *Probe `json:"startupProbe,omitempty"`
	Readiness *Probe `json:"readinessProbe,omitempty"`
	Liveness  *Probe `json:"livenessProbe,omitempty"`
	// PostStart and PreStop are the container's lifecycle hooks (v6).
	PostStart *Handler `json:"postStart,omitempty"`
	PreStop   *Handler `json:"preStop,omitempty"`
	// TerminationMessagePath is where the container writes its
	// termination message (default /dev/termination-log), and
	// TerminationMessagePolicy "File" or "FallbackToLogsOnError" (v6).
	TerminationMessagePath   string `json:"terminationMessagePath,omitempty"`
	TerminationMessagePolicy string `json:"terminationMessagePolicy,omitempty"`
	// PullAuth lists the credentials, from the pod's image pull secrets,
	// that match Image's registry, most specific first; the device tries
	// them in order (v6). Not part of RestartHash: new credentials never
	// restart a container.
	PullAuth []RegistryAuth `json:"pullAuth,omitempty"`
}

// RegistryAuth is a username and password for pulling an image. It is
// secret: neither side logs it.
type RegistryAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// String hides the password, so that a RegistryAuth printed by mistake
// leaks nothing.
func (a RegistryAuth) String() string { return a.Username + ":***" }

// Probe is a container probe with Kubernetes' semantics and defaults
// already applied by the provider; ports are numbers (named ports are
// resolved). Exactly one of Exec, HTTPGet, TCPPort and GRPC is set.
type Probe struct {
	Exec                []string   `json:"exec,omitempty"`
	HTTPGet             *HTTPProbe `json:"httpGet,omitempty"`
	TCPPort             int32      `json:"tcpPort,omitempty"`
	GRPC                *GRPCProbe `json:"grpc,omitempty"`
	InitialDelaySeconds int32      `json:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int32      `json:"periodSeconds"`
	TimeoutSeconds      int32      `json:"timeoutSeconds"`
	SuccessThreshold    int32      `json:"successThreshold"`
	FailureThreshold    int32      `json:"failureThreshold"`
}

// Handler is a lifecycle hook: a command, an HTTP GET inside the pod, or a
// pause (exactly one is set).
type Handler struct {
	Exec         []string   `json:"exec,omitempty"`
	HTTPGet      *HTTPProbe `json:"httpGet,omitempty"`
	SleepSeconds int64      `json:"sleepSeconds,omitempty"`
}

// GRPCProbe is a gRPC health check (grpc.health.v1) inside the pod's
// network namespace.
type GRPCProbe struct {
	Port    int32  `json:"port"`
	Service string `json:"service,omitempty"`
}

// HTTPProbe is an HTTP GET probe inside the pod's network namespace.
type HTTPProbe struct {
	Path    string            `json:"path,omitempty"`
	Port    int32             `json:"port"`
	Scheme  string            `json:"scheme,omitempty"` // HTTP or HTTPS
	Host    string            `json:"host,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// EnvVar is a resolved environment variable, or one the device fills in.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// FieldRef, when set, is the downward API field whose value the device
	// puts in Value when it creates the container, because only the device
	// knows it: FieldPodIP, FieldPodIPs, FieldHostIP or FieldHostIPs
	// (protocol 8; the provider never sends it to an older device, which
	// would set an empty Value).
	FieldRef string `json:"fieldRef,omitempty"`
}

// Fields of EnvVar.FieldRef, spelled as Kubernetes' field paths. The
// plural ones are comma-separated lists, the first address first.
const (
	FieldPodIP   = "status.podIP"
	FieldPodIPs  = "status.podIPs"
	FieldHostIP  = "status.hostIP"
	FieldHostIPs = "status.hostIPs"
)

// Port is a container port, optionally published on the device.
type Port struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	HostPort      int32  `json:"hostPort,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
	Protocol      string `json:"protocol,omitempty"` // TCP, UDP; default TCP
}

// Volume is a pod-level volume the device provides itself.
type Volume struct {
	Name string `json:"name"`
	// EmptyDir is a scratch directory that lives as long as the pod.
	EmptyDir bool `json:"emptyDir,omitempty"`
	// HostPath is a path on the device.
	HostPath string `json:"hostPath,omitempty"`
	// Files holds the content of a ConfigMap, Secret, downwardAPI or
	// projected volume: file name (a relative path) → bytes. The device
	// writes a new set atomically, as kubelet does: a "..data" symlink
	// swapped to a new directory, so readers never see half an update.
	// A volume with neither EmptyDir nor HostPath is a Files volume, with
	// no files when Files is empty (see IsFiles).
	Files map[string][]byte `json:"files,omitempty"`

	// Since protocol 6.

	// FileModes holds the permission bits of the files in Files that are
	// not 0644 (a volume's defaultMode, an item's mode).
	FileModes map[string]int32 `json:"fileModes,omitempty"`
	// Medium "Memory" makes an EmptyDir a tmpfs.
	Medium string `json:"medium,omitempty"`
	// SizeLimitBytes bounds a Memory EmptyDir (the tmpfs size).
	SizeLimitBytes int64 `json:"sizeLimitBytes,omitempty"`

	// Image mounts the file system of an OCI image, read-only (protocol 8).
	Image *ImageVolume `json:"image,omitempty"`
}

// ImageVolume is an image volume's image, pulled as its policy says with
// the credentials that match it, as a container's image.
type ImageVolume struct {
	Reference  string         `json:"reference"`
	PullPolicy string         `json:"pullPolicy,omitempty"`
	PullAuth   []RegistryAuth `json:"pullAuth,omitempty"`
}

// IsFiles reports whether v is a Files volume (ConfigMap, Secret,
// downwardAPI, projected): neither an emptyDir, a host path nor an image.
// Its Files may be empty — an optional ConfigMap or Secret that does not
// exist (or was deleted), one without keys — and an empty map is not
// encoded, so a decoded volume with no source at all is a Files volume with
// no files: the device empties it, as kubelet's atomic writer does.
func (v *Volume) IsFiles() bool { return !v.EmptyDir && v.HostPath == "" && v.Image == nil }

// MediumMemory is Volume.Medium for a tmpfs emptyDir, spelled as in
// Kubernetes.
const MediumMemory = "Memory"

// Mount places a Volume in a container.
type Mount struct {
	Volume   string `json:"volume"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// SubPath mounts this file or directory of the volume instead of its
	// root (v6; subPathExpr is expanded by the provider). The subPath of a
	// Files volume is a copy taken when the container is created: it does
	// not follow updates, as with kubelet.
	SubPath string `json:"subPath,omitempty"`
}

// Resources are the limits a container runs under.
type Resources struct {
	MemoryLimitBytes int64 `json:"memoryLimitBytes,omitempty"`
	CPULimitMilli    int64 `json:"cpuLimitMilli,omitempty"`
	// CPURequestMilli is the CPU request (protocol 6): the container's CPU
	// shares, as kubelet sets them.
	CPURequestMilli int64 `json:"cpuRequestMilli,omitempty"`
}

// Security is the subset of a container security context a device honours.
type Security struct {
	RunAsUser              *int64   `json:"runAsUser,omitempty"`
	RunAsGroup             *int64   `json:"runAsGroup,omitempty"`
	Privileged             bool     `json:"privileged,omitempty"`
	ReadOnlyRootFilesystem bool     `json:"readOnlyRootFilesystem,omitempty"`
	CapAdd                 []string `json:"capAdd,omitempty"`
	CapDrop                []string `json:"capDrop,omitempty"`

	// Since protocol 6.

	// RunAsNonRoot refuses to start the container as user 0, with
	// kubelet's CreateContainerConfigError.
	RunAsNonRoot bool `json:"runAsNonRoot,omitempty"`
	// SupplementalGroups are extra groups of the container's processes.
	SupplementalGroups []int64 `json:"supplementalGroups,omitempty"`
	// NoNewPrivileges sets no_new_privs (allowPrivilegeEscalation: false).
	NoNewPrivileges bool `json:"noNewPrivileges,omitempty"`
	// Seccomp is "" or SeccompRuntimeDefault (the runtime's default
	// profile), SeccompUnconfined, or SeccompLocalhost with
	// SeccompProfile, a path relative to the device's seccomp directory.
	Seccomp        string `json:"seccomp,omitempty"`
	SeccompProfile string `json:"seccompProfile,omitempty"`
	// AppArmor is "" or "RuntimeDefault", "Unconfined", or "Localhost"
	// with AppArmorProfile, the name of a profile loaded on the device.
	AppArmor        string `json:"appArmor,omitempty"`
	AppArmorProfile string `json:"appArmorProfile,omitempty"`
	// SELinux holds label options: "user:…", "role:…", "type:…", "level:…".
	SELinux []string `json:"seLinux,omitempty"`
	// UnmaskedProc leaves /proc unmasked (procMount: Unmasked).
	UnmaskedProc bool `json:"unmaskedProc,omitempty"`
}

// Profile kinds of Security.Seccomp and Security.AppArmor, spelled as in
// Kubernetes.
const (
	SeccompRuntimeDefault = "RuntimeDefault"
	SeccompUnconfined     = "Unconfined"
	SeccompLocalhost      = "Localhost"
)

// Pod phases, spelled as in Kubernetes.
const (
	PhasePending   = "Pending"
	PhaseRunning   = "Running"
	PhaseSucceeded = "Succeeded"
	PhaseFailed    = "Failed"
)

// PodStatus is what a device observes of one workload, stored at
// PodKey(device, UID) in StatusBucket. The device deletes the key once the
// pod's containers are gone from the device.
type PodStatus struct {
	UID        string `json:"uid"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Generation int64  `json:"generation,omitempty"` // of the Workload observed
	Phase      string `json:"phase"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	HostIP     string `json:"hostIP,omitempty"`
	PodIP      string `json:"podIP,omitempty"`
	// StartTime is when the device first accepted the workload.
	StartTime  *time.Time        `json:"startTime,omitempty"`
	Containers []ContainerStatus `json:"containers"`
	// InitContainers are the init containers' statuses (v6).
	InitContainers []ContainerStatus `json:"initContainers,omitempty"`
	// EphemeralContainers are the ephemeral containers' statuses (v8).
	EphemeralContainers []ContainerStatus `json:"ephemeralContainers,omitempty"`
	// Initialized reports whether every init container has succeeded (a
	// sidecar: started) (v6; nil from older devices, which run none).
	Initialized *bool `json:"initialized,omitempty"`
	// ObservedAt is when the device took this status.
	ObservedAt time.Time `json:"observedAt"`
}

// Container states.
const (
	StateWaiting    = "waiting"
	StateRunning    = "running"
	StateTerminated = "terminated"
)

// ContainerStatus is the observed state of one container.
type ContainerStatus struct {
	Name         string     `json:"name"`
	State        string     `json:"state"` // StateWaiting, StateRunning or StateTerminated
	Reason       string     `json:"reason,omitempty"`
	Message      string     `json:"message,omitempty"`
	ExitCode     int32      `json:"exitCode,omitempty"`
	StartedAt    *time.Time `json:"startedAt,omitempty"`
	FinishedAt   *time.Time `json:"finishedAt,omitempty"`
	RestartCount int32      `json:"restartCount"`
	Ready        bool       `json:"ready"`
	// Started is false while a startup probe has not succeeded (v6).
	Started     *bool  `json:"started,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageID     string `json:"imageID,omitempty"`
	ContainerID string `json:"containerID,omitempty"` // without the "podman://" scheme
	// LastTermination is the previous run's end, if the container restarted.
	LastTermination *Termination `json:"lastTermination,omitempty"`
	// ProbeFailure is, while the container's last probe verdict is a
	// failure, what failed, as a kubelet words it ("Readiness probe failed:
	// HTTP probe failed with statuscode: 503"; protocol 7).
	ProbeFailure string `json:"probeFailure,omitempty"`
}

// Termination describes how a container run ended.
type Termination struct {
	ExitCode   int32      `json:"exitCode"`
	Reason     string     `json:"reason,omitempty"`
	Message    string     `json:"message,omitempty"` // v6
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}
