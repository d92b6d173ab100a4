package callout

import (
	"github.com/nats-io/jwt/v2"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Limits of a device's (and an enrollment client's) connection.
const (
	MaxDevicePayload       = 64 << 10
	MaxDeviceSubscriptions = 100
)

// FleetAccount is the account devices and the provider live in.
const FleetAccount = "FLEET"

// AuthAccount holds the callout service's own user.
const AuthAccount = "AUTH"

// EnrollInboxPrefix is the inbox prefix of enrollment clients.
const EnrollInboxPrefix = "_INBOX_enroll"

// DeviceInboxPrefix is the inbox prefix a device uses (nats.CustomInboxPrefix).
func DeviceInboxPrefix(device string) string { return "_INBOX_" + device }

// DevicePermissions allows device its own subjects and keys, nothing else.
func DevicePermissions(device string) jwt.Permissions {
	wl, st := bridge.WorkloadsBucket, bridge.StatusBucket
	var p jwt.Permissions
	p.Pub.Allow.Add(
		bridge.SubjectPrefix+"."+device+".>",
		// No $JS.API.STREAM.INFO: with a subjects filter it lists every
		// key of a bucket, every device and pod UID of the fleet. Devices
		// bind to the buckets by name (nodeagent's devBucket).
		// Watch its own desired state: one filtered ordered consumer.
		"$JS.API.CONSUMER.CREATE.KV_"+wl+".*.$KV."+wl+"."+device+".>",
		"$JS.FC.KV_"+wl+".>",
		// Read one of its own keys.
		"$JS.API.DIRECT.GET.KV_"+wl+".$KV."+wl+"."+device+".>",
		// Write and delete its own status keys.
		"$KV."+st+"."+device+".>",
	)
	p.Sub.Allow.Add(DeviceInboxPrefix(device) + ".>")
	return p
}

// EnrollmentPermissions allows sending the enrollment request only.
func EnrollmentPermissions() jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(bridge.EnrollSubject)
	p.Sub.Allow.Add(EnrollInboxPrefix + ".>")
	return p
}

// ServicePermissions allows everything in the fleet account.
func ServicePermissions() jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(">")
	p.Sub.Allow.Add(">")
	return p
}
