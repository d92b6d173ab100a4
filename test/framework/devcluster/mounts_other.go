//go:build !linux

package devcluster

// unmountUnder is a no-op where agents mount nothing.
func unmountUnder(string) {}
