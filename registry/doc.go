// Package registry keeps vk-fleet's device registry in ordinary Kubernetes
// objects, with no CRDs:
//
//   - an enrolled device is a Node named after it, labelled
//     vk-fleet.io/managed=true, whose annotation vk-fleet.io/nkey holds the
//     device's public nkey (or vk-fleet.io/zitadel-user-id its Zitadel
//     machine user); deleting the Node revokes the device;
//   - an enrollment token is a bootstrap-token Secret in kube-system
//     (type bootstrap.kubernetes.io/token), with the usage key
//     usage-vk-fleet-enrollment and vk-fleet's own keys for uses and labels.
//     It never carries usage-bootstrap-authentication, so it cannot
//     authenticate to the API server.
//
// Usage:
//
//	r := registry.New(client)
//	tok, _ := r.CreateToken(ctx, registry.TokenOptions{TTL: time.Hour, Uses: 1})
//	node, err := r.Enroll(ctx, registry.Enrollment{Token: tok.String(), Name: "pi-1", NKey: pub})
package registry
