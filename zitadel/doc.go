// Package zitadel lets organisations that run Zitadel use Zitadel machine
// users as vk-fleet device identities instead of nkeys.
//
// Three parts, one per side:
//
//   - Introspector (server): the auth callout hands it the token a device
//     presented; it asks Zitadel's introspection endpoint, as the API
//     application of the vk-fleet project, whether the token is active and
//     returns its subject, the machine user ID. Answers are cached for a
//     few seconds by the token's hash, never past the token's expiry.
//   - devicetoken.TokenSource (device, a separate lean package): turns the
//     machine user's JSON key into access tokens with the JWT-profile
//     grant, for nats.TokenHandler.
//   - CreateMachineUser, DeactivateUser, RemoveUser (admin, for
//     `fleetctl enroll --zitadel` and revocation): Zitadel's gRPC
//     management API.
//
// Usage:
//
//	// fleetctl: create the device's identity; the key goes to the device.
//	userID, keyJSON, err := zitadel.CreateMachineUser(ctx, zitadel.AdminConfig{
//		Issuer: "https://zitadel.example.com", Token: pat}, "dev1")
//
//	// provider: verify device tokens in the auth callout.
//	in, err := zitadel.NewIntrospector(ctx, zitadel.IntrospectorConfig{
//		Issuer: "https://zitadel.example.com", KeyJSON: apiAppKey, Audience: projectID})
//	svc, err := callout.New(callout.Config{..., Zitadel: in})
//
// Tokens and keys never appear in errors or logs; a log line names a token
// only by a fingerprint of its SHA-256. zitadeltest runs a Zitadel
// stand-in for tests.
package zitadel
