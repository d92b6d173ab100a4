package keyfile

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const privateKey = "-----BEGIN RSA PRIVATE KEY-----\nMIIsecret\n-----END RSA PRIVATE KEY-----\n"

func TestParse(t *testing.T) {
	k, err := Parse([]byte(`{"type":"serviceaccount","keyId":"k1","key":` + quote(privateKey) + `,"userId":"u1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if k.Subject() != "u1" || k.KeyID != "k1" || k.Key != privateKey {
		t.Fatalf("parsed %+v", *k)
	}
	app, err := Parse([]byte(`{"type":"application","keyId":"k2","key":"x","appId":"a","clientId":"c@p"}`))
	if err != nil {
		t.Fatal(err)
	}
	if app.Subject() != "c@p" {
		t.Fatalf("application subject = %q", app.Subject())
	}

	for name, in := range map[string]string{
		"not json":        `{"key":"MIIsecret`,
		"wrong structure": `{"key":["MIIsecret"]}`,
		"no key id":       `{"type":"serviceaccount","key":"MIIsecret","userId":"u"}`,
		"no user":         `{"type":"serviceaccount","keyId":"k","key":"MIIsecret"}`,
		"app without id":  `{"type":"application","keyId":"k","key":"MIIsecret"}`,
		"unknown type":    `{"type":"human","keyId":"k","key":"MIIsecret","userId":"u"}`,
	} {
		_, err := Parse([]byte(in))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		} else if strings.Contains(err.Error(), "MIIsecret") {
			t.Errorf("%s: error contains the key: %v", name, err)
		}
	}
}

func TestKeyNeverPrinted(t *testing.T) {
	k, err := Parse([]byte(`{"type":"serviceaccount","keyId":"k1","key":` + quote(privateKey) + `,"userId":"u1"}`))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("key", "key", k, "value", *k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", *k, *k, *k, k), logs.String()} {
		if strings.Contains(s, "MIIsecret") {
			t.Errorf("private key printed: %s", s)
		}
	}
}

func quote(s string) string { return fmt.Sprintf("%q", s) }
