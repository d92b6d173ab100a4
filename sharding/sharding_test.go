package sharding

import (
	"fmt"
	"testing"
)

// Every member gets a fair share of slots, and a member leaving moves only
// its own slots.
func TestPreferredSpreadsAndMovesLittle(t *testing.T) {
	const slots = 64
	three := []string{"r0", "r1", "r2"}
	count := map[string]int{}
	for s := range slots {
		count[preferred(s, three)]++
	}
	for _, m := range three {
		if count[m] < slots/6 {
			t.Errorf("member %s prefers %d of %d slots: %v", m, count[m], slots, count)
		}
	}
	two := []string{"r0", "r1"}
	for s := range slots {
		before, after := preferred(s, three), preferred(s, two)
		if before != "r2" && before != after {
			t.Errorf("slot %d moved from %s to %s though %s stayed", s, before, after, before)
		}
	}
}

func TestSlotOfSpreadsDevices(t *testing.T) {
	hit := map[int]bool{}
	for i := range 200 {
		s := SlotOf(fmt.Sprintf("pi-%d", i), 64)
		if s < 0 || s >= 64 {
			t.Fatalf("slot %d out of range", s)
		}
		hit[s] = true
	}
	if len(hit) < 50 {
		t.Errorf("200 devices landed in only %d of 64 slots", len(hit))
	}
}
