package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Runtime runs the pods of one device. The podman implementation lives in
// nodeagent/podman; nodeagent/simruntime fakes one in memory for scale tests.
//
// Every object a Runtime creates carries the labels below, so that an agent
// finds its own pods after a restart and ignores every other container on the
// same machine (including another agent's).
type Runtime interface {
	// Version names the runtime, for Node.status.nodeInfo: "4.3.1".
	Version(ctx context.Context) (string, error)
	// ListPods returns every pod of this device that exists in the runtime.
	ListPods(ctx context.Context) ([]PodState, error)
	// CreatePod pulls the images of w as its pull policies say, then creates
	// and starts a pod with all of w's containers. It labels the pod and its
	// containers with the device, w's identity and specHash. A failure
	// concerning one container is a *ContainerError; CreatePod removes what
	// it created before it returns an error.
	CreatePod(ctx context.Context, w *bridge.Workload, specHash string) error
	// StartContainer starts an exited container of the pod again.
	StartContainer(ctx context.Context, podUID, container string) error
	// RemovePod stops the pod's containers, giving them grace to exit, and
	// removes the pod and its containers. A missing pod is not an error.
	RemovePod(ctx context.Context, podUID string, grace time.Duration) error
	// Events streams a notice whenever a container of this device changes
	// state, until ctx ends. The channel closes when the stream breaks.
	Events(ctx context.Context) (<-chan Event, error)
}

// VolumeUpdater is a Runtime that can bring the ConfigMap and Secret
// volume contents (Volume.Files) of a running pod up to date in place,
// without restarting a container, as a kubelet does.
type VolumeUpdater interface {
	UpdateVolumes(ctx context.Context, w *bridge.Workload) error
}

// Labels put on every pod and container a Runtime creates.
const (
	LabelDevice    = "io.vk-fleet.device"
	LabelPodUID    = "io.vk-fleet.pod-uid"
	LabelNamespace = "io.vk-fleet.namespace"
	LabelPodName   = "io.vk-fleet.pod-name"
	LabelContainer = "io.vk-fleet.container"
	LabelSpecHash  = "io.vk-fleet.spec-hash"
)

// Container states of a ContainerState.
const (
	ContainerCreated = "created"
	ContainerRunning = "running"
	ContainerExited  = "exited"
	ContainerUnknown = "unknown"
)

// PodState is what the runtime holds of one pod.
type PodState struct {
	UID       string
	Namespace string
	Name      string
	SpecHash  string
	PodIP     string
	// Stopped reports that the whole pod, its infra container too, is
	// stopped: what a reboot or `podman pod stop` leaves, never a crash of
	// the pod's own containers. Its containers start again at once, without
	// restart back-off.
	Stopped bool
	// Containers holds the workload's containers (no infra container).
	Containers []ContainerState
}

// ContainerState is what the runtime holds of one container.
type ContainerState struct {
	Name       string
	ID         string
	Image      string
	ImageID    string
	State      string // ContainerCreated, ContainerRunning, ContainerExited or ContainerUnknown
	ExitCode   int32
	StartedAt  time.Time
	FinishedAt time.Time
	// OOMKilled reports whether the kernel killed the container for memory.
	OOMKilled bool
	// TerminationMessage is what an exited container wrote to its
	// terminationMessagePath.
	TerminationMessage string
	// Error is the runtime's error for a container that failed to start.
	Error string
}

// Event tells that something changed in one pod.
type Event struct {
	PodUID string
}

// Reasons of a ContainerError, spelled as kubelet spells them.
const (
	ReasonErrImagePull          = "ErrImagePull"
	ReasonErrImageNeverPull     = "ErrImageNeverPull"
	ReasonCreateContainerError  = "CreateContainerError"
	ReasonRunContainerError     = "RunContainerError"
	ReasonCreatePodSandboxError = "CreatePodSandboxError"
	// ReasonCreateContainerConfigError: the container's configuration
	// cannot be honoured (runAsNonRoot with a root user); its message is
	// kubelet's.
	ReasonCreateContainerConfigError = "CreateContainerConfigError"
)

// ContainerError is a failure of one container of a pod.
type ContainerError struct {
	Container string
	Reason    string // one of the Reason constants
	Err       error
}

func (e *ContainerError) Error() string {
	if e.Container == "" {
		return fmt.Sprintf("%s: %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("container %s: %s: %v", e.Container, e.Reason, e.Err)
}

func (e *ContainerError) Unwrap() error { return e.Err }

// ErrRuntimeUnavailable wraps errors of a runtime that cannot be reached.
var ErrRuntimeUnavailable = errors.New("container runtime unavailable")
