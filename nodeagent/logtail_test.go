package nodeagent

import (
	"fmt"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLogTail(t *testing.T) {
	var hundred strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&hundred, "line %d\n", i)
	}
	long := strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name, log  string
		lines, max int
		want       string
	}{
		{"a last line without a newline", "DONE", 80, 2048, "DONE"},
		{"after full lines", "one\ntwo\nDONE", 80, 2048, "one\ntwo\nDONE"},
		{"the last lines", hundred.String(), 3, 2048, "line 98\nline 99\nline 100\n"},
		{"at most max bytes", "first\n" + long + "\n", 80, 10, "xxxxxxxxx\n"},
		{"empty", "", 80, 2048, ""},
		{"a window's worth of log", strings.Repeat(long+"\n", 40) + "end", 2, 2048, long[len(long)-2044:] + "\nend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := logTail(iotest.HalfReader(strings.NewReader(tc.log)), tc.lines, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("logTail = %q, want %q", got, tc.want)
			}
		})
	}
}
