package bridge

import (
	"bytes"
	"testing"
)

// fuzzDecode checks, for any input, that Decode never panics and that
// what it accepts encodes to a fixed point: decoding the encoding and
// encoding again gives the same bytes.
func fuzzDecode[M Message](t *testing.T, data []byte) {
	m, err := Decode[M](data)
	if err != nil {
		return
	}
	enc, err := Encode(m)
	if err != nil {
		t.Fatalf("encoding what was decoded: %v", err)
	}
	again, err := Decode[M](enc)
	if err != nil {
		t.Fatalf("decoding what was encoded: %v", err)
	}
	enc2, err := Encode(again)
	if err != nil {
		t.Fatalf("encoding again: %v", err)
	}
	if !bytes.Equal(enc, enc2) {
		t.Fatalf("round trip changed the message:\n%s\n%s", enc, enc2)
	}
}

// Each decoder has a seed corpus in testdata/fuzz/<name>; hack/test.sh
// runs each target briefly.

func FuzzDecodeWorkload(f *testing.F) {
	f.Add([]byte(`{"uid":"u","namespace":"n","name":"p","containers":[{"name":"c","image":"i","env":[{"name":"A","value":"1"}]}],"volumes":[{"name":"v","files":{"a":"Yg=="}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode[Workload](t, data)
		if w, err := Decode[Workload](data); err == nil {
			_ = RestartHash(w)
		}
	})
}

func FuzzDecodePodStatus(f *testing.F) {
	f.Add([]byte(`{"uid":"u","phase":"Running","containers":[{"name":"c","state":"running","restartCount":1,"ready":true}],"observedAt":"2026-11-28T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[PodStatus](t, data) })
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add([]byte(`{"device":"pi-1","inventory":{"cpus":4,"memoryBytes":1024,"addresses":["10.0.0.1"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[Heartbeat](t, data) })
}

func FuzzDecodeDesiredIndex(f *testing.F) {
	f.Add([]byte(`{"device":"pi-1","podUIDs":["a","b"],"writtenAt":"2026-11-28T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[DesiredIndex](t, data) })
}

func FuzzDecodeEnrollRequest(f *testing.F) {
	f.Add([]byte(`{"name":"pi-1","nkey":"UABC","labels":{"room":"kitchen"}}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode[EnrollRequest](t, data) })
}

func FuzzSplitPodKey(f *testing.F) {
	f.Add("pi-1.0d9e6c1f-uid")
	f.Add("pi-1._.index")
	f.Fuzz(func(t *testing.T, key string) {
		device, uid, ok := SplitPodKey(key)
		if ok && PodKey(device, uid) != key {
			t.Fatalf("SplitPodKey(%q) = %q, %q", key, device, uid)
		}
		if _, ok := IsIndexKey(key); ok {
			if _, _, isPod := SplitPodKey(key); isPod {
				t.Fatalf("%q is both an index key and a pod key", key)
			}
		}
	})
}

// Session frames in either form: the decoder never panics, and what it
// accepts survives a round trip through the binary form.
func FuzzDecodeSessionFrames(f *testing.F) {
	f.Add([]byte(`{"seq":3,"stream":2,"data":"aGk=","eof":true,"exit":7}`))
	bin, _ := EncodeStreamFrame(&StreamFrame{Seq: 1, Data: []byte("hello")}, true)
	f.Add(bin)
	bin, _ = EncodeSessionControl(&SessionControl{Seq: 2, Data: []byte{0, 1, 2}}, true)
	f.Add(bin)
	f.Fuzz(func(t *testing.T, data []byte) {
		if fr, err := DecodeStreamFrame(data); err == nil {
			enc, err := EncodeStreamFrame(fr, true)
			if err != nil {
				t.Fatalf("encoding what was decoded: %v", err)
			}
			again, err := DecodeStreamFrame(enc)
			if err != nil || again.Seq != fr.Seq || !bytes.Equal(again.Data, fr.Data) || again.EOF != fr.EOF {
				t.Fatalf("round trip: %+v → %+v, %v", fr, again, err)
			}
		}
		if c, err := DecodeSessionControl(data); err == nil {
			enc, err := EncodeSessionControl(c, true)
			if err != nil {
				t.Fatalf("encoding what was decoded: %v", err)
			}
			again, err := DecodeSessionControl(enc)
			if err != nil || again.Seq != c.Seq || !bytes.Equal(again.Data, c.Data) || again.EOF != c.EOF {
				t.Fatalf("round trip: %+v → %+v, %v", c, again, err)
			}
		}
	})
}
