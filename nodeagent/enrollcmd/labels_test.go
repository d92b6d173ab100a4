package enrollcmd

import (
	"errors"
	"strings"
	"testing"

	"github.com/vk-fleet/vk-fleet/callout"
	"github.com/vk-fleet/vk-fleet/registry"
)

// TestParseLabelsAgreesWithRegistry: the device checks labels as the
// server will (registry.ParseLabels, with apimachinery's rules).
func TestParseLabelsAgreesWithRegistry(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, in := range []string{
		"", " ", "room=kitchen", "room=kitchen,floor=1", " room = kitchen ", "room=", "room",
		"example.com/room=kitchen", "a.b-c.example/x_y.z=V-1", "Example.com/room=x", "-room=x", "room-=x",
		"room=-x", "room=x-", "room=a b", "/room=x", "example.com/=x", "a/b/c=x", "=x", "type=x", "mytype=x",
		"vk-fleet.io/x=y", "kubernetes.io/hostname=x", "node.kubernetes.io/x=y", "k8s.io/x=y", "foo.k8s.io/x=y",
		"x.vk-fleet.io/y=z", long + "=x", long + "a=x", "room=" + long, "room=" + long + "a",
		strings.Repeat("a", 250) + ".com/x=y", strings.Repeat("a.", 126) + "a/x=y", "ro_om=ki.tch_en", "_room=x",
		"room=kitchen,room=bath", "a=b,,c=d",
	} {
		got, gotErr := ParseLabels(in)
		want, wantErr := registry.ParseLabels(in)
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("ParseLabels(%q): err %v; registry says %v", in, gotErr, wantErr)
			continue
		}
		if gotErr != nil {
			if !errors.Is(gotErr, ErrInvalidLabel) {
				t.Errorf("ParseLabels(%q): err %v, want ErrInvalidLabel", in, gotErr)
			}
			continue
		}
		if len(got) != len(want) {
			t.Errorf("ParseLabels(%q) = %v; registry says %v", in, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("ParseLabels(%q) = %v; registry says %v", in, got, want)
			}
		}
	}
}

func TestEnrollInboxPrefix(t *testing.T) {
	if enrollInboxPrefix != callout.EnrollInboxPrefix {
		t.Fatalf("enrollInboxPrefix = %q, the callout allows %q", enrollInboxPrefix, callout.EnrollInboxPrefix)
	}
}
