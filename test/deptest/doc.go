// Package deptest holds a test that keeps the device-side packages free of
// Kubernetes and nats-server dependencies.
package deptest
