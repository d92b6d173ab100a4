// Package registry runs an OCI registry with basic authentication in
// process on 127.0.0.1, for tests of private image pulls.
//
// The registry is go-containerregistry's in-memory one behind a handler
// that answers every request without the right credentials with 401 and a
// Basic challenge, as a private registry does:
//
//	reg, err := registry.Start("puller", "s3cret")
//	t.Cleanup(reg.Close)
//	refs, err := reg.PushFromPodman(ctx, svc.Conf, podmantest.Image, "private/busybox:v1")
//	// refs[0] is "127.0.0.1:<port>/private/busybox:v1"
//
// It speaks plain HTTP: podman must list reg.Host as an insecure registry
// (podmantest.RegistriesConf).
package registry

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// Registry is a running registry. Close stops it.
type Registry struct {
	// Host is the registry's "127.0.0.1:<port>", the first part of its
	// image references.
	Host string
	// Username and Password are the only credentials it accepts.
	Username, Password string

	srv          *httptest.Server
	unauthorized atomic.Int64
}

// unauthorizedBody is the distribution spec's error for a missing or wrong
// credential; podman shows its message ("unauthorized: authentication
// required").
const unauthorizedBody = `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}`

// Start starts a registry on a free port of 127.0.0.1 that accepts only
// username and password.
func Start(username, password string) (*Registry, error) {
	if username == "" || password == "" {
		return nil, errors.New("starting registry: empty username or password")
	}
	r := &Registry{Username: username, Password: password}
	inner := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(r.Username)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(r.Password)) != 1 {
			r.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="vk-fleet test registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, unauthorizedBody)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	r.Host = r.srv.Listener.Addr().String()
	return r, nil
}

// Close stops the registry; its images are gone.
func (r *Registry) Close() { r.srv.Close() }

// Unauthorized returns how many requests the registry refused.
func (r *Registry) Unauthorized() int64 { return r.unauthorized.Load() }

// Push stores img as repo ("private/busybox:v1") and returns its full
// reference.
func (r *Registry) Push(ctx context.Context, img v1.Image, repo string) (string, error) {
	ref, err := name.NewTag(r.Host+"/"+repo, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("pushing %s: %w", repo, err)
	}
	auth := &authn.Basic{Username: r.Username, Password: r.Password}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(auth)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	return ref.String(), nil
}

// PushFromPodman pushes the image local of the podman storage that the
// containers.conf conf selects (with `podman save`) as each of repos, and
// returns their full references.
func (r *Registry) PushFromPodman(ctx context.Context, conf, local string, repos ...string) ([]string, error) {
	dir, err := os.MkdirTemp("", "vkf-registry-")
	if err != nil {
		return nil, fmt.Errorf("saving %s: %w", local, err)
	}
	defer os.RemoveAll(dir)
	archive := filepath.Join(dir, "image.tar")
	cmd := exec.CommandContext(ctx, "podman", "save", "--format", "docker-archive", "-o", archive, local)
	cmd.Env = podmantest.Env(conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("saving %s: %w: %s", local, err, out)
	}
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		return nil, fmt.Errorf("reading the saved %s: %w", local, err)
	}
	refs := make([]string, 0, len(repos))
	for _, repo := range repos {
		ref, err := r.Push(ctx, img, repo)
		if err != nil {
			return nil, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
}
