//go:build !linux

package main

// dropExecutablePages is a no-op where the agent cannot tell its
// executable's mappings apart.
func dropExecutablePages() (int64, error) { return 0, nil }

// residentBytes is unknown here.
func residentBytes() int64 { return 0 }
