package main

import (
	"testing"
	"time"
)

func TestReconnectDelayBacksOffWithJitter(t *testing.T) {
	for attempt, want := range map[int][2]time.Duration{
		0: {time.Second, 2 * time.Second}, 1: {time.Second, 2 * time.Second},
		2: {2 * time.Second, 4 * time.Second}, 3: {4 * time.Second, 8 * time.Second},
		5: {15 * time.Second, 30 * time.Second}, 6: {15 * time.Second, 30 * time.Second},
		1000: {15 * time.Second, 30 * time.Second},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := reconnectDelay(attempt)
			if d < want[0] || d > want[1] {
				t.Fatalf("attempt %d: delay %v, want within [%v, %v]", attempt, d, want[0], want[1])
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: %d distinct delays in 200: no jitter", attempt, len(seen))
		}
	}
}
