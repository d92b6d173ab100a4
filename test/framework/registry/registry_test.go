package registry

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Only the registry's credentials read an image; anyone else gets 401.
func TestBasicAuth(t *testing.T) {
	reg, err := Start("puller", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := reg.Push(t.Context(), img, "private/random:v1")
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}

	got, err := remote.Image(tag, remote.WithContext(t.Context()), remote.WithAuth(&authn.Basic{Username: "puller", Password: "s3cret"}))
	if err != nil {
		t.Fatalf("pulling with the credentials: %v", err)
	}
	want, _ := img.Digest()
	if d, _ := got.Digest(); d != want {
		t.Errorf("pulled digest %s, pushed %s", d, want)
	}

	before := reg.Unauthorized()
	for _, auth := range []authn.Authenticator{authn.Anonymous, &authn.Basic{Username: "puller", Password: "wrong"}} {
		_, err = remote.Image(tag, remote.WithContext(t.Context()), remote.WithAuth(auth))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("pulling with %v: err = %v, want 401", auth, err)
		}
	}
	if reg.Unauthorized() <= before {
		t.Errorf("refusals counted: %d before, %d after", before, reg.Unauthorized())
	}
}
