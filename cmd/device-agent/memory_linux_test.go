package main

import (
	"runtime/debug"
	"testing"
)

// TestDropExecutablePages: the test binary drops its executable's clean
// pages and keeps running (they come back from the page cache as needed).
func TestDropExecutablePages(t *testing.T) {
	before := residentBytes()
	dropped, err := dropExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	if dropped <= 0 || before <= 0 {
		t.Fatalf("dropped %d bytes of a %d-byte resident set; want some", dropped, before)
	}
	debug.FreeOSMemory() // runs the collector over code and type data again
	if after := residentBytes(); after <= 0 || after >= before {
		t.Logf("resident %d bytes before, %d after", before, after)
	}
}
