package bridge

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestValidateDeviceName(t *testing.T) {
	good := []string{"a", "pi-1", "0pi", strings.Repeat("a", 63), "kitchen-pi-4b"}
	bad := []string{"", "Pi", "pi_1", "-pi", "pi-", "pi.1", "pi 1", "pi*", "pi>", strings.Repeat("a", 64), "ü"}
	for _, n := range good {
		if err := ValidateDeviceName(n); err != nil {
			t.Errorf("ValidateDeviceName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateDeviceName(n); !errors.Is(err, ErrInvalidDeviceName) {
			t.Errorf("ValidateDeviceName(%q) = %v, want ErrInvalidDeviceName", n, err)
		}
	}
}

func TestSubjectsAndKeys(t *testing.T) {
	if got := HeartbeatSubject("pi-1"); got != "vkf.dev.pi-1.hb" {
		t.Errorf("HeartbeatSubject = %q", got)
	}
	for subj, want := range map[string]string{
		"vkf.dev.pi-1.hb": "pi-1", "vkf.dev.PI.hb": "", "vkf.dev.a.b.hb": "", "other.pi-1.hb": "", "vkf.dev.pi-1.status": "",
	} {
		got, ok := DeviceFromHeartbeatSubject(subj)
		if got != want || ok != (want != "") {
			t.Errorf("DeviceFromHeartbeatSubject(%q) = %q, %v; want %q", subj, got, ok, want)
		}
	}
	key := PodKey("pi-1", "6f1c-44")
	d, uid, ok := SplitPodKey(key)
	if !ok || d != "pi-1" || uid != "6f1c-44" {
		t.Errorf("SplitPodKey(%q) = %q %q %v", key, d, uid, ok)
	}
	for _, k := range []string{"pi-1", "pi-1.", ".uid", "pi-1.a.b"} {
		if _, _, ok := SplitPodKey(k); ok {
			t.Errorf("SplitPodKey(%q) accepted a malformed key", k)
		}
	}
	if DeviceKeys("pi-1") != "pi-1.>" {
		t.Errorf("DeviceKeys = %q", DeviceKeys("pi-1"))
	}
}

// A message from a newer peer, with fields this version does not know,
// still decodes.
func TestDecodeIgnoresUnknownFields(t *testing.T) {
	data := []byte(`{"uid":"u1","namespace":"ns","name":"p","futureField":{"x":1},
		"containers":[{"name":"c","image":"i","gpu":"yes"}]}`)
	w, err := Decode[Workload](data)
	if err != nil {
		t.Fatal(err)
	}
	if w.UID != "u1" || len(w.Containers) != 1 || w.Containers[0].Image != "i" {
		t.Errorf("decoded %+v", w)
	}
	if _, err := Decode[Workload]([]byte(`{"uid":`)); err == nil {
		t.Error("truncated message decoded without error")
	}
}

func TestRoundTrip(t *testing.T) {
	hb := &Heartbeat{Device: "pi-1", Seq: 7, Inventory: Inventory{Architecture: "arm64", CPUs: 4, ProtocolVersion: ProtocolVersion}}
	data, err := Encode(hb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[Heartbeat](data)
	if err != nil || got.Device != "pi-1" || got.Seq != 7 || got.Inventory.CPUs != 4 || got.Inventory.ProtocolVersion != ProtocolVersion {
		t.Errorf("round trip = %+v, %v", got, err)
	}
}

// A quiet heartbeat is small: it leaves out what the provider already has.
func TestQuietHeartbeatIsSmall(t *testing.T) {
	full := &Heartbeat{Device: "pi-1", Seq: 7, Inventory: Inventory{Architecture: "arm64", CPUs: 4}}
	full.State = StateHash(full)
	quiet := &Heartbeat{Seq: 12345, Pods: 10, State: full.State}
	b, err := Encode(quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 64 {
		t.Errorf("a quiet heartbeat takes %d bytes: %s", len(b), b)
	}
	got, err := Decode[Heartbeat](b)
	if err != nil || got.Full() || !(*Heartbeat)(full).Full() || got.State != full.State {
		t.Errorf("decoded %+v (err %v)", got, err)
	}
	other := *full
	other.Pressure = &NodePressure{Memory: true}
	if StateHash(&other) == full.State {
		t.Error("pressure does not change the state")
	}
}

// Inventory.IsZero knows every field: a field added to Inventory and not
// to IsZero would be dropped from heartbeats that carry only it.
func TestInventoryIsZeroKnowsEveryField(t *testing.T) {
	typ := reflect.TypeFor[Inventory]()
	for i := range typ.NumField() {
		var inv Inventory
		f := reflect.ValueOf(&inv).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int64:
			f.SetInt(1)
		case reflect.Slice:
			f.Set(reflect.Append(f, reflect.ValueOf("x")))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		default:
			t.Fatalf("field %s: kind %s not covered by this test", typ.Field(i).Name, f.Kind())
		}
		if inv.IsZero() {
			t.Errorf("Inventory.IsZero ignores field %s", typ.Field(i).Name)
		}
	}
}
