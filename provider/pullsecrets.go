package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"go.podman.io/image/v5/docker/reference"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// This file resolves a pod's image pull secrets into the credentials each
// container's pull uses, the way a kubelet does: the secrets the pod names
// in spec.imagePullSecrets (the API server's ServiceAccount admission copies
// the ServiceAccount's imagePullSecrets there when a pod names none, so that
// is how a ServiceAccount's pull secrets arrive), read into one keyring that
// matches registries as kubelet's credentialprovider.BasicDockerKeyring does.

// keyring maps registry locations ("host[:port][/path]") to credentials.
// The zero value is an empty keyring.
type keyring struct {
	index []string                         // keys, most specific (reverse-sorted) first
	creds map[string][]bridge.RegistryAuth // key → credentials, in the order added
}

// dockerConfigEntry is one registry's entry of a .dockercfg or the "auths"
// of a .dockerconfigjson.
type dockerConfigEntry struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// Auth is base64("username:password"); it wins over the fields above.
	Auth string `json:"auth,omitempty"`
}

// credentials returns the entry's username and password.
func (e dockerConfigEntry) credentials() (bridge.RegistryAuth, error) {
	if e.Auth == "" {
		return bridge.RegistryAuth{Username: e.Username, Password: e.Password}, nil
	}
	dec, err := base64.StdEncoding.DecodeString(e.Auth)
	if err != nil {
		return bridge.RegistryAuth{}, errors.New("auth is not base64") // never the value
	}
	user, pass, ok := strings.Cut(string(dec), ":")
	if !ok {
		return bridge.RegistryAuth{}, errors.New("auth is not username:password")
	}
	return bridge.RegistryAuth{Username: user, Password: pass}, nil
}

// addSecret adds the registries of a kubernetes.io/dockerconfigjson or
// kubernetes.io/dockercfg Secret. Other secrets add nothing, as with a
// kubelet. An unreadable one is an error that never quotes its content.
func (k *keyring) addSecret(s *corev1.Secret) error {
	var cfg map[string]dockerConfigEntry
	switch {
	case s.Type == corev1.SecretTypeDockerConfigJson && len(s.Data[corev1.DockerConfigJsonKey]) > 0:
		var doc struct {
			Auths map[string]dockerConfigEntry `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &doc); err != nil {
			return fmt.Errorf("%s is not a docker config: %w", corev1.DockerConfigJsonKey, jsonSyntaxOnly(err))
		}
		cfg = doc.Auths
	case s.Type == corev1.SecretTypeDockercfg && len(s.Data[corev1.DockerConfigKey]) > 0:
		if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &cfg); err != nil {
			return fmt.Errorf("%s is not a docker config: %w", corev1.DockerConfigKey, jsonSyntaxOnly(err))
		}
	default:
		return nil
	}
	locs := make([]string, 0, len(cfg))
	for loc := range cfg {
		locs = append(locs, loc)
	}
	sort.Strings(locs) // a stable order for credentials of one key
	for _, loc := range locs {
		auth, err := cfg[loc].credentials()
		if err != nil {
			return fmt.Errorf("registry %q: %w", loc, err)
		}
		key, ok := keyringKey(loc)
		if !ok {
			continue // kubelet ignores an entry it cannot parse
		}
		if k.creds == nil {
			k.creds = map[string][]bridge.RegistryAuth{}
		}
		if !slices.Contains(k.creds[key], auth) {
			k.creds[key] = append(k.creds[key], auth)
		}
		if !slices.Contains(k.index, key) {
			k.index = append(k.index, key)
		}
	}
	// More specific paths first: for "quay.io/coreos/etcd", credentials of
	// "quay.io/coreos" before those of "quay.io".
	sort.Sort(sort.Reverse(sort.StringSlice(k.index)))
	return nil
}

// jsonSyntaxOnly keeps a JSON error's kind and offset but never the bytes it
// quotes (an UnmarshalTypeError names a value's type, a SyntaxError a
// character of the secret).
func jsonSyntaxOnly(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q has the wrong type", te.Field)
	}
	return errors.New("invalid JSON")
}

// keyringKey turns a docker config location ("https://index.docker.io/v1/",
// "registry.local:5000", "quay.io/team") into a keyring key: host[:port]
// and a path, without scheme and without a leading /v1/ or /v2/.
func keyringKey(loc string) (string, bool) {
	value := loc
	if !strings.HasPrefix(value, "https://") && !strings.HasPrefix(value, "http://") {
		value = "https://" + value
	}
	u, err := url.Parse(value)
	if err != nil {
		return "", false
	}
	path := u.Path
	if strings.HasPrefix(path, "/v2/") || strings.HasPrefix(path, "/v1/") {
		path = path[3:]
	}
	if path != "" && path != "/" {
		return u.Host + path, true
	}
	return u.Host, true
}

// defaultRegistryHost is the key under which Docker Hub's credentials are
// stored ("https://index.docker.io/v1/"); they serve every image that
// resolves to Docker Hub.
const defaultRegistryHost = "index.docker.io"

// lookup returns the credentials for image, most specific match first, as
// kubelet's keyring does: a key matches when its host has as many dot
// separated parts as the image's (each part may be a glob: "*.example.com"),
// the ports are equal and its path is a prefix of the image's repository
// path. Without a match, Docker Hub images use index.docker.io's
// credentials. Nil means an anonymous pull.
func (k *keyring) lookup(image string) []bridge.RegistryAuth {
	if len(k.index) == 0 {
		return nil
	}
	repo := repository(image)
	var out []bridge.RegistryAuth
	for _, key := range k.index {
		if urlsMatch(key, repo) {
			for _, a := range k.creds[key] {
				if !slices.Contains(out, a) {
					out = append(out, a)
				}
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	if isDefaultRegistry(repo) {
		return slices.Clone(k.creds[defaultRegistryHost])
	}
	return nil
}

// repository is image's repository as kubelet looks it up: normalised
// ("busybox" is "docker.io/library/busybox"), without tag or digest.
func repository(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		// As written, less any digest and tag.
		image, _, _ = strings.Cut(image, "@")
		if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
			image = image[:i]
		}
		return image
	}
	return named.Name()
}

// isDefaultRegistry reports whether repo pulls from Docker Hub.
func isDefaultRegistry(repo string) bool {
	first, _, hasSlash := strings.Cut(repo, "/")
	if first == "" {
		return false
	}
	if !hasSlash || first == "docker.io" || first == defaultRegistryHost {
		return true
	}
	return !strings.ContainsAny(first, ".:")
}

// urlsMatch is kubelet's credentialprovider.URLsMatchStr: whether the
// keyring key glob matches the repository target.
func urlsMatch(glob, target string) bool {
	g, err := url.Parse("https://" + glob)
	if err != nil {
		return false
	}
	t, err := url.Parse("https://" + target)
	if err != nil {
		return false
	}
	gParts, gPort := splitHost(g.Host)
	tParts, tPort := splitHost(t.Host)
	if gPort != tPort || len(gParts) != len(tParts) || !strings.HasPrefix(t.Path, g.Path) {
		return false
	}
	for i := range gParts {
		if ok, err := filepath.Match(gParts[i], tParts[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

func splitHost(hostport string) ([]string, string) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, ""
	}
	return strings.Split(host, "."), port
}

// podKeyring reads the pod's image pull secrets into a keyring. Like a
// kubelet, it goes on without a secret that does not exist: missing names
// them, and the pull goes ahead without them (and fails, if the registry
// wants credentials, until the secret exists: then the pod is synced again).
// An error is worth a retry: a secret that could not be read or parsed.
func (p *Provider) podKeyring(ctx context.Context, pod *corev1.Pod) (k keyring, missing []string, err error) {
	for _, ref := range pod.Spec.ImagePullSecrets {
		if ref.Name == "" {
			continue
		}
		var s *corev1.Secret
		var gerr error
		if p.secretLister != nil {
			s, gerr = p.secretLister.Secrets(pod.Namespace).Get(ref.Name)
		} else {
			s, gerr = p.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		}
		if apierrors.IsNotFound(gerr) {
			missing = append(missing, ref.Name)
			continue
		}
		if gerr != nil {
			err = errors.Join(err, fmt.Errorf("image pull secret %q: %w", ref.Name, gerr))
			continue
		}
		if aerr := k.addSecret(s); aerr != nil {
			err = errors.Join(err, fmt.Errorf("image pull secret %q: %w", ref.Name, aerr))
		}
	}
	return k, missing, err
}

// usesPullSecret reports whether pod names the Secret name as an image
// pull secret.
func usesPullSecret(pod *corev1.Pod, name string) bool {
	for _, ref := range pod.Spec.ImagePullSecrets {
		if ref.Name == name {
			return true
		}
	}
	return false
}

// warnMissingPullSecrets tells, as a kubelet does with the same event, that
// some image pull secrets of pod do not exist.
func (p *Provider) warnMissingPullSecrets(pod *corev1.Pod, missing []string) {
	if len(missing) == 0 {
		return
	}
	if p.log != nil {
		p.log.Info("image pull secrets not found; pulling without them", "pod", pod.Namespace+"/"+pod.Name, "secrets", missing)
	}
	if r := p.recorder; r != nil {
		r.Eventf(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret",
			"Unable to retrieve some image pull secrets (%s); attempting to pull the image may not succeed.", strings.Join(missing, ", "))
	}
}

// applyPullAuth gives every container of w the credentials of k that match
// its image.
func applyPullAuth(w *bridge.Workload, k *keyring) {
	for i := range w.InitContainers {
		w.InitContainers[i].PullAuth = k.lookup(w.InitContainers[i].Image)
	}
	for i := range w.Containers {
		w.Containers[i].PullAuth = k.lookup(w.Containers[i].Image)
	}
	for i := range w.EphemeralContainers {
		w.EphemeralContainers[i].PullAuth = k.lookup(w.EphemeralContainers[i].Image)
	}
	for i := range w.Volumes {
		if iv := w.Volumes[i].Image; iv != nil {
			iv.PullAuth = k.lookup(iv.Reference)
		}
	}
}
