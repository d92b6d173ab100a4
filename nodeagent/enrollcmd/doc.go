// Package enrollcmd provides `fleetctl enroll`, the command a person runs on
// a device to register it and install the agent's configuration, shared by
// the operator's fleetctl and the fleetctl that device-agent becomes when
// started under that name (the vk-fleet-agent package links
// /usr/bin/fleetctl to device-agent).
//
// It stays as lean as the agent itself: no Kubernetes client, no
// apimachinery and no zitadel-go API client. Labels are checked here with
// Kubernetes' syntax rules (the server checks them again), and a Zitadel
// machine user is created with the three management API calls enroll
// needs, spoken as gRPC over net/http's HTTP/2.
//
// Usage:
//
//	root.AddCommand(enrollcmd.NewCommand())
//
//	// or without cobra:
//	o := enrollcmd.DefaultOptions()
//	o.Server, o.Token, o.Name = "tls://fleet.example.com:4222", token, "pi-1"
//	if err := o.Complete(); err == nil { err = o.Validate() }
//	err = o.Run(ctx, os.Stdout)
package enrollcmd
