package childproc

import "testing"

func TestLastLines(t *testing.T) {
	if got := LastLines([]byte("a\nb\nc\n"), 2); got != "b\nc" {
		t.Errorf("got %q", got)
	}
	if got := LastLines(nil, 2); got != "(log is empty)" {
		t.Errorf("got %q", got)
	}
}
