package bridge

import (
	"errors"
	"fmt"
	"strings"
)

// Bucket and subject names of the protocol (see ProtocolVersion; names are
// never renamed, only added).
const (
	// WorkloadsBucket is the JetStream KV bucket that holds desired state:
	// one Workload per key "<device>.<podUID>".
	WorkloadsBucket = "vkf-workloads"
	// StatusBucket is the JetStream KV bucket that holds observed state:
	// one PodStatus per key "<device>.<podUID>".
	StatusBucket = "vkf-status"
	// SubjectPrefix starts every subject owned by a device.
	SubjectPrefix = "vkf.dev"
	// HeartbeatWildcard matches the heartbeat subject of every device.
	HeartbeatWildcard = SubjectPrefix + ".*.hb"
)

// MaxDeviceNameLength is the longest device name: an RFC 1123 label.
const MaxDeviceNameLength = 63

// ErrInvalidDeviceName is returned by ValidateDeviceName.
var ErrInvalidDeviceName = errors.New("invalid device name")

// ValidateDeviceName reports whether name can name a device. A device name is
// a Kubernetes Node name and a NATS subject token, so it must be an RFC 1123
// label: 1 to 63 lower-case letters, digits and '-', starting and ending with
// a letter or digit.
func ValidateDeviceName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidDeviceName)
	}
	if len(name) > MaxDeviceNameLength {
		return fmt.Errorf("%w %q: longer than %d characters", ErrInvalidDeviceName, name, MaxDeviceNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(name)-1:
		default:
			return fmt.Errorf("%w %q: must consist of lower-case letters, digits and '-', and start and end with a letter or digit", ErrInvalidDeviceName, name)
		}
	}
	return nil
}

// HeartbeatSubject is the subject on which device publishes its heartbeats.
func HeartbeatSubject(device string) string {
	return SubjectPrefix + "." + device + ".hb"
}

// InventoryRequestSubject is where the provider asks device for a full
// heartbeat (protocol 7): it has seen a State it does not know. The message
// is empty; the device answers with its next heartbeat, sent at once.
func InventoryRequestSubject(device string) string {
	return "_INBOX_" + device + ".inventory"
}

// DesiredSubject is where the provider tells device which key of its
// desired state (a pod key or its IndexKey) it changed (protocol 7); the
// message holds the key.
func DesiredSubject(device string) string {
	return "_INBOX_" + device + ".desired"
}

// DeviceFromHeartbeatSubject returns the device token of a heartbeat subject.
func DeviceFromHeartbeatSubject(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix+".")
	if !ok {
		return "", false
	}
	device, ok := strings.CutSuffix(rest, ".hb")
	if !ok || ValidateDeviceName(device) != nil {
		return "", false
	}
	return device, true
}

// PodKey is the KV key of one pod of device, in both buckets.
func PodKey(device, podUID string) string {
	return device + "." + podUID
}

// DeviceKeys is the KV key filter that matches every pod key of device.
func DeviceKeys(device string) string {
	return device + ".>"
}

// InstanceTag marks, in a device agent's NATS connection name, which running
// agent the connection belongs to: "vk-fleet device-agent pi-1
// instance=<boot id>". Two machines with one identity (a cloned SD card)
// have different boot IDs; one agent reconnecting keeps its own. The auth
// callout refuses a second live instance of a device.
const InstanceTag = " instance="

// IndexKey is the key, in WorkloadsBucket, of device's DesiredIndex. It is
// matched by DeviceKeys(device) but never split by SplitPodKey.
func IndexKey(device string) string {
	return device + "._.index"
}

// IsIndexKey reports whether key is an IndexKey, and of which device.
func IsIndexKey(key string) (device string, ok bool) {
	device, ok = strings.CutSuffix(key, "._.index")
	return device, ok && ValidateDeviceName(device) == nil
}

// SplitPodKey splits a KV key made by PodKey.
func SplitPodKey(key string) (device, podUID string, ok bool) {
	device, podUID, ok = strings.Cut(key, ".")
	if !ok || device == "" || podUID == "" || strings.Contains(podUID, ".") {
		return "", "", false
	}
	return device, podUID, true
}
