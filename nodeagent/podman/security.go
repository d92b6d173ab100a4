//go:build remote

package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// resolvConfName is the file, beside a pod's volumes, that holds its
// resolv.conf when the pod has a dnsConfig. Volume names are DNS labels,
// so it never collides with one.
const resolvConfName = ".resolv.conf"

// hostsName is the file, beside a pod's volumes, that holds the pod's
// /etc/hosts.
const hostsName = ".hosts"

// etcHosts is where a container finds its hosts file.
const etcHosts = "/etc/hosts"

// podNamespaces sets the namespaces and sysctls of w's podman pod (its
// /etc/hosts is the agent's: writeHostsFile). Containers of a pod share its infra container's network, UTS
// and IPC namespaces, as in a Kubernetes pod; the PID namespace too with
// ShareProcessNamespace (the infra process is PID 1, as kubelet's pause).
// With HostIPC the pod shares no IPC namespace: each container joins the
// device's (containerNamespaces).
func podNamespaces(ps *specgen.PodSpecGenerator, w *bridge.Workload) {
	shared := []string{"net", "uts"}
	if !w.HostIPC {
		shared = append(shared, "ipc")
	}
	if w.ShareProcessNamespace {
		shared = append(shared, "pid")
	}
	ps.SharedNamespaces = shared
	if len(w.Sysctls) > 0 {
		ps.Sysctl = w.Sysctls
	}
}

// containerNamespaces puts s in the device's PID and IPC namespaces as w
// asks.
func containerNamespaces(s *specgen.SpecGenerator, w *bridge.Workload) {
	if w.HostPID {
		s.PidNS = specgen.Namespace{NSMode: specgen.Host}
	}
	if w.HostIPC {
		s.IpcNS = specgen.Namespace{NSMode: specgen.Host}
	}
}

// secureContainer applies c's security context and w's pod-level settings
// that depend on the device — the image's user, the seccomp directory, the
// device's resolv.conf, the pod's hosts file at hostsPath — to s, the
// podman spec of c built from image. An error a retry with the same spec
// cannot fix is a *nodeagent.ContainerError with kubelet's reason and
// message.
func (r *Runtime) secureContainer(ctx context.Context, s *specgen.SpecGenerator, w *bridge.Workload, c *bridge.Container, image, hostsPath string) error {
	containerNamespaces(s, w)
	mountHostsFile(s, c, hostsPath)
	if err := r.podResolvConf(s, w, c); err != nil {
		return &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreateContainerError, Err: err}
	}
	sec := c.Security
	if sec == nil {
		return nil
	}
	configErr := func(format string, a ...any) error {
		return &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreateContainerConfigError,
			Err: fmt.Errorf(format, a...)}
	}
	pod := fmt.Sprintf("%s_%s(%s)", w.Name, w.Namespace, w.UID) // kubelet's format.Pod

	var imageUser string
	if sec.RunAsNonRoot && sec.RunAsUser == nil || sec.RunAsUser == nil && sec.RunAsGroup != nil {
		u, err := r.imageUser(ctx, image)
		if err != nil {
			return &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreateContainerError, Err: err}
		}
		imageUser = u
	}
	// kubelet's verifyRunAsNonRoot, with its messages.
	if sec.RunAsNonRoot {
		if sec.RunAsUser != nil {
			if *sec.RunAsUser == 0 {
				return configErr("container's runAsUser breaks non-root policy (pod: %q, container: %s)", pod, c.Name)
			}
		} else {
			uid, name := splitImageUser(imageUser)
			switch {
			case uid != nil && *uid == 0:
				return configErr("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod, c.Name)
			case uid == nil && name != "":
				return configErr("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s)", name, pod, c.Name)
			}
		}
	}

	switch {
	case sec.RunAsUser != nil && sec.RunAsGroup != nil:
		s.User = fmt.Sprintf("%d:%d", *sec.RunAsUser, *sec.RunAsGroup)
	case sec.RunAsUser != nil:
		s.User = strconv.FormatInt(*sec.RunAsUser, 10)
	case sec.RunAsGroup != nil:
		// The image's user with the group asked for, as kubelet.
		user, _, _ := strings.Cut(imageUser, ":")
		if user == "" {
			user = "0"
		}
		s.User = fmt.Sprintf("%s:%d", user, *sec.RunAsGroup)
	}
	for _, g := range sec.SupplementalGroups {
		s.Groups = append(s.Groups, strconv.FormatInt(g, 10))
	}
	if sec.Privileged {
		s.Privileged = ptr(true)
	}
	if sec.ReadOnlyRootFilesystem {
		s.ReadOnlyFilesystem = ptr(true)
		s.ReadWriteTmpfs = ptr(false) // Kubernetes: no writable /tmp or /run either
	}
	s.CapAdd = capNames(sec.CapAdd)
	s.CapDrop = capNames(sec.CapDrop)
	if sec.NoNewPrivileges {
		s.NoNewPrivileges = ptr(true)
	}

	switch sec.Seccomp {
	case "", bridge.SeccompRuntimeDefault:
		// podman's default profile: what the device runs without a
		// seccompProfile too, as a kubelet with --seccomp-default.
	case bridge.SeccompUnconfined:
		s.SeccompProfilePath = "unconfined"
	case bridge.SeccompLocalhost:
		path := filepath.Join(r.seccompDir(), filepath.FromSlash(sec.SeccompProfile))
		if _, err := os.Stat(path); err != nil {
			return &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreateContainerError,
				Err: fmt.Errorf("cannot load seccomp profile %q: %w", path, err)}
		}
		s.SeccompProfilePath = path
	default:
		return configErr("seccomp profile type %q is not supported", sec.Seccomp)
	}

	switch sec.AppArmor {
	case "", bridge.SeccompRuntimeDefault:
	case bridge.SeccompUnconfined:
		if appArmorEnabled() {
			s.ApparmorProfile = "unconfined"
		}
	case bridge.SeccompLocalhost:
		if !appArmorEnabled() {
			return configErr("Cannot enforce AppArmor: AppArmor is not enabled on the host")
		}
		s.ApparmorProfile = sec.AppArmorProfile
	default:
		return configErr("AppArmor profile type %q is not supported", sec.AppArmor)
	}
	s.SelinuxOpts = slices.Clone(sec.SELinux)
	if sec.UnmaskedProc {
		s.Unmask = []string{"ALL"}
	}
	return nil
}

// seccompDir is where Localhost seccomp profiles live on the device, as
// kubelet's <root-dir>/seccomp: <state dir>/seccomp.
func (r *Runtime) seccompDir() string {
	return filepath.Join(r.stateDir, "seccomp")
}

// appArmorEnabled reports whether the device's kernel enforces AppArmor.
func appArmorEnabled() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.TrimSpace(string(b)) == "Y"
}

// imageUser returns the user an image runs as ("", "1000", "app:app").
func (r *Runtime) imageUser(ctx context.Context, image string) (string, error) {
	rep, err := images.GetImage(r.ctx(ctx), image, nil)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", image, classify(err))
	}
	if rep == nil || rep.ImageData == nil || rep.Config == nil {
		return "", nil
	}
	return rep.Config.User, nil
}

// splitImageUser reads an image's user as the CRI does: the part before
// ':' is a numeric uid or a user name; no user is root.
func splitImageUser(user string) (uid *int64, name string) {
	user, _, _ = strings.Cut(user, ":")
	if user == "" {
		return ptr(int64(0)), ""
	}
	if n, err := strconv.ParseInt(user, 10, 64); err == nil {
		return &n, ""
	}
	return nil, user
}

// podResolvConf mounts a resolv.conf of w's own at /etc/resolv.conf in s
// when w has a DNS configuration: kubelet's, which is the device's
// resolv.conf with the pod's dnsConfig appended, or the dnsConfig alone
// with dnsPolicy None. Without one podman's (the device's) is used.
func (r *Runtime) podResolvConf(s *specgen.SpecGenerator, w *bridge.Workload, c *bridge.Container) error {
	if w.DNS == nil {
		return nil
	}
	var host []byte
	if !w.DNS.Replace {
		var err error
		if host, err = os.ReadFile(r.hostResolvConf()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("reading the device's resolv.conf: %w", err)
		}
	}
	path, err := r.writePodFile(w, resolvConfName, resolvConf(host, w.DNS))
	if err != nil {
		return fmt.Errorf("writing the pod's resolv.conf: %w", err)
	}
	opts := []string{"rbind", "rw"}
	if c.Security != nil && c.Security.ReadOnlyRootFilesystem {
		opts[1] = "ro"
	}
	s.Mounts = append(s.Mounts, spec.Mount{Type: "bind", Source: path, Destination: "/etc/resolv.conf", Options: opts})
	return nil
}

// writeHostsFile writes the /etc/hosts of w's containers beside its
// volumes and returns its path: kubelet's (managedHostsFileContent) for a
// pod on the pod network, whose IP is podIP ("" when it has none); for a
// pod on the host's network the device's own, followed by the pod's host
// aliases.
func (r *Runtime) writeHostsFile(w *bridge.Workload, podIP string) (string, error) {
	var content []byte
	if w.HostNetwork {
		host, err := os.ReadFile(etcHosts)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("reading the device's /etc/hosts: %w", err)
		}
		content = hostNetworkHosts(host, w.HostAliases)
	} else {
		hostname := w.Hostname
		if hostname == "" {
			hostname = w.Name // as podSpec names the pod's host
		}
		content = managedHosts(podIP, hostname, w.HostAliases)
	}
	path, err := r.writePodFile(w, hostsName, content)
	if err != nil {
		return "", fmt.Errorf("writing the pod's /etc/hosts: %w", err)
	}
	return path, nil
}

// managedHosts is kubelet's /etc/hosts of a pod on the pod network, in
// kubelet's words (pkg/kubelet/kubelet_pods.go managedHostsFileContent; a
// device has no cluster domain, so the pod has no FQDN).
func managedHosts(podIP, hostname string, aliases []bridge.HostAlias) []byte {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	if podIP != "" {
		fmt.Fprintf(&b, "%s\t%s\n", podIP, hostname)
	}
	writeHostAliases(&b, aliases)
	return b.Bytes()
}

// hostNetworkHosts is kubelet's /etc/hosts of a pod on the host's
// network: the device's, followed by the pod's host aliases.
func hostNetworkHosts(host []byte, aliases []bridge.HostAlias) []byte {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file (host network).\n")
	b.Write(host)
	writeHostAliases(&b, aliases)
	return b.Bytes()
}

func writeHostAliases(b *bytes.Buffer, aliases []bridge.HostAlias) {
	if len(aliases) == 0 {
		return
	}
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, a := range aliases {
		fmt.Fprintf(b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
	}
}

// mountHostsFile bind-mounts the pod's hosts file at path over /etc/hosts
// in s, unless container c mounts something there itself (kubelet then
// leaves it alone) or path is "".
func mountHostsFile(s *specgen.SpecGenerator, c *bridge.Container, path string) {
	if path == "" {
		return
	}
	for _, m := range c.Mounts {
		if filepath.Clean(m.Path) == etcHosts {
			return
		}
	}
	s.Mounts = append(s.Mounts, spec.Mount{Type: "bind", Source: path, Destination: etcHosts, Options: []string{"rbind", "rw"}})
}

// writePodFile writes a file of w's own beside its volumes and returns
// its path.
func (r *Runtime) writePodFile(w *bridge.Workload, name string, data []byte) (string, error) {
	dir := r.podVolumesDir(w.UID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, data, 0o644)
}

// hostResolvConf is the device's resolv.conf. With systemd-resolved's stub
// (127.0.0.53, unreachable from a pod) it is the list of upstream servers,
// as podman and kubeadm's kubelet use.
func (r *Runtime) hostResolvConf() string {
	if r.resolvConf != "" {
		return r.resolvConf
	}
	const stub, upstream = "/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"
	if b, err := os.ReadFile(stub); err == nil && bytes.Contains(b, []byte("127.0.0.53")) {
		if _, err := os.Stat(upstream); err == nil {
			return upstream
		}
	}
	return stub
}

// resolvConf is kubelet's resolv.conf for a pod: the nameservers, searches
// and options of host (empty with dnsPolicy None) followed by d's, without
// duplicates; an option of d replaces host's of the same name.
func resolvConf(host []byte, d *bridge.DNS) []byte {
	var servers, searches, options []string
	for line := range strings.SplitSeq(string(host), "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				servers = append(servers, f[1])
			}
		case "search":
			searches = f[1:] // the last search line wins, as in the resolver
		case "domain":
			if len(f) > 1 {
				searches = f[1:2]
			}
		case "options":
			options = append(options, f[1:]...)
		}
	}
	servers = appendNew(servers, d.Nameservers...)
	searches = appendNew(searches, d.Searches...)
	for _, o := range d.Options {
		name, _, _ := strings.Cut(o, ":")
		options = slices.DeleteFunc(options, func(h string) bool {
			hn, _, _ := strings.Cut(h, ":")
			return hn == name
		})
		options = append(options, o)
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return []byte(b.String())
}

// appendNew appends to list each of add not in it yet.
func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}

// setVolumeOwnership gives the group gid to dir and everything in it, as
// kubelet does for a pod's fsGroup: group read (and write, unless readOnly)
// on files, group search and the setgid bit on directories, so that files
// the containers create there belong to gid too.
func setVolumeOwnership(dir string, gid int64, readOnly bool) error {
	mask := fs.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(path, -1, int(gid)); err != nil {
			return fmt.Errorf("setting group %d on %s: %w", gid, path, err)
		}
		mode := info.Mode().Perm() | mask
		if d.IsDir() {
			mode |= fs.ModeSetgid | 0o110
		}
		if err := os.Chmod(path, mode|info.Mode()&fs.ModeSetgid); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", path, err)
		}
		return nil
	})
}
