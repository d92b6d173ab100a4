// Package callout authenticates and authorizes every NATS connection of a
// vk-fleet installation through nats-server's auth callout.
//
// The server sends each connection attempt to AuthCalloutSubject; the
// Service answers with a user JWT (signed by the issuer account key, and
// sealed with an xkey where configured) whose permissions allow exactly what
// that identity may do:
//
//   - a device, proven by its nkey (signed nonce) or by a Zitadel access
//     token of its machine user, gets its own subjects, KV keys and inbox
//     prefix only (DevicePermissions);
//   - an enrollment token gets the enrollment request and nothing else;
//   - a service identity (a vk-fleet replica) gets the whole fleet account.
//
// Every error denies. A device whose Node is deleted is refused from then on,
// and Service.Kick disconnects its live connections.
//
// Usage (embedded server):
//
//	keys, _ := callout.GenerateKeys()
//	opts := callout.ServerOptions(keys, authPassword, providerPassword)  // applied to nats-server Options
//	svc, _ := callout.New(callout.Config{Keys: keys, Devices: cache, Tokens: reg})
//	go svc.Run(ctx, authConn)
package callout
