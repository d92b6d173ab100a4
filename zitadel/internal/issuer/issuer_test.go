package issuer

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"https://zitadel.example.com/":     "https://zitadel.example.com",
		"https://zitadel.example.com:8443": "https://zitadel.example.com:8443",
	} {
		got, _, err := Parse(in, false)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, _, err := Parse("http://127.0.0.1:8080", true); err != nil || got != "http://127.0.0.1:8080" {
		t.Errorf("insecure http: %q, %v", got, err)
	}
	for _, in := range []string{"", "http://127.0.0.1:8080", "ftp://x", "zitadel.example.com", "https://x/?a=b", "https://x/#f", "https://user:hunter2@x", "%zz"} {
		_, _, err := Parse(in, false)
		if err == nil {
			t.Errorf("Parse(%q) accepted", in)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Parse(%q) error shows the password: %v", in, err)
		}
	}
}
