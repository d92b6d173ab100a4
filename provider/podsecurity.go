package provider

import (
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// securityProtocol is the protocol version that carries the security
// context fields beyond user, group, privileged, read-only root and
// capabilities, and the pod namespace and DNS fields (bridge v6).
const securityProtocol = 6

// containerSecurity is c's effective security context — the container's
// fields over the pod's, as kubelet's DetermineEffectiveSecurityContext —
// in the form the device applies. Fields a device cannot honour are
// refused; fields with no effect on a Linux device are ignored with a note.
func containerSecurity(pod *corev1.Pod, c *corev1.Container, refuse, ignore func(string, ...any)) *bridge.Security {
	ps := pod.Spec.SecurityContext
	if ps == nil {
		ps = &corev1.PodSecurityContext{}
	}
	cs := c.SecurityContext
	if cs == nil {
		cs = &corev1.SecurityContext{}
	}
	s := &bridge.Security{
		RunAsUser:  firstNonNil(cs.RunAsUser, ps.RunAsUser),
		RunAsGroup: firstNonNil(cs.RunAsGroup, ps.RunAsGroup),
	}
	if v := firstNonNil(cs.RunAsNonRoot, ps.RunAsNonRoot); v != nil {
		s.RunAsNonRoot = *v
	}
	if cs.Privileged != nil {
		s.Privileged = *cs.Privileged
	}
	if cs.ReadOnlyRootFilesystem != nil {
		s.ReadOnlyRootFilesystem = *cs.ReadOnlyRootFilesystem
	}
	if cs.Capabilities != nil {
		for _, cap := range cs.Capabilities.Add {
			s.CapAdd = append(s.CapAdd, string(cap))
		}
		for _, cap := range cs.Capabilities.Drop {
			s.CapDrop = append(s.CapDrop, string(cap))
		}
	}
	// kubelet: fsGroup first, then supplementalGroups.
	if ps.FSGroup != nil {
		s.SupplementalGroups = append(s.SupplementalGroups, *ps.FSGroup)
	}
	for _, g := range ps.SupplementalGroups {
		if !slices.Contains(s.SupplementalGroups, g) {
			s.SupplementalGroups = append(s.SupplementalGroups, g)
		}
	}
	// kubelet sets no_new_privs only when allowPrivilegeEscalation is false.
	if cs.AllowPrivilegeEscalation != nil && !*cs.AllowPrivilegeEscalation {
		s.NoNewPrivileges = true
	}

	seccomp := cs.SeccompProfile
	if seccomp == nil {
		seccomp = ps.SeccompProfile
	}
	if seccomp != nil {
		switch seccomp.Type {
		case corev1.SeccompProfileTypeRuntimeDefault, corev1.SeccompProfileTypeUnconfined:
			s.Seccomp = string(seccomp.Type)
		case corev1.SeccompProfileTypeLocalhost:
			if seccomp.LocalhostProfile == nil || !relativeInside(*seccomp.LocalhostProfile) {
				refuse("container %q: seccompProfile Localhost needs a localhostProfile relative to the device's seccomp directory", c.Name)
			} else {
				s.Seccomp, s.SeccompProfile = bridge.SeccompLocalhost, *seccomp.LocalhostProfile
			}
		default:
			refuse("container %q: seccompProfile type %q is not supported", c.Name, seccomp.Type)
		}
	}

	apparmor := cs.AppArmorProfile
	if apparmor == nil {
		apparmor = ps.AppArmorProfile
	}
	if apparmor != nil {
		switch apparmor.Type {
		case corev1.AppArmorProfileTypeRuntimeDefault, corev1.AppArmorProfileTypeUnconfined:
			s.AppArmor = string(apparmor.Type)
		case corev1.AppArmorProfileTypeLocalhost:
			if apparmor.LocalhostProfile == nil || *apparmor.LocalhostProfile == "" {
				refuse("container %q: appArmorProfile Localhost needs a localhostProfile", c.Name)
			} else {
				s.AppArmor, s.AppArmorProfile = string(apparmor.Type), *apparmor.LocalhostProfile
			}
		default:
			refuse("container %q: appArmorProfile type %q is not supported", c.Name, apparmor.Type)
		}
	}

	selinux := cs.SELinuxOptions
	if selinux == nil {
		selinux = ps.SELinuxOptions
	}
	if selinux != nil {
		for _, kv := range [][2]string{{"user", selinux.User}, {"role", selinux.Role}, {"type", selinux.Type}, {"level", selinux.Level}} {
			if kv[1] != "" {
				s.SELinux = append(s.SELinux, kv[0]+":"+kv[1])
			}
		}
	}

	if cs.ProcMount != nil {
		switch *cs.ProcMount {
		case corev1.DefaultProcMount:
		case corev1.UnmaskedProcMount:
			s.UnmaskedProc = true
		default:
			refuse("container %q: procMount %q is not supported", c.Name, *cs.ProcMount)
		}
	}
	if cs.WindowsOptions != nil || ps.WindowsOptions != nil {
		ignore("container %q: securityContext.windowsOptions (devices run Linux)", c.Name)
	}

	if reflect.DeepEqual(s, &bridge.Security{}) {
		return nil
	}
	return s
}

// podSecurity fills w's pod-level security fields from pod: fsGroup and
// sysctls.
func podSecurity(pod *corev1.Pod, w *bridge.Workload, refuse, ignore func(string, ...any)) {
	ps := pod.Spec.SecurityContext
	if ps == nil {
		return
	}
	w.FSGroup = ps.FSGroup
	for _, sc := range ps.Sysctls {
		name := normalizeSysctl(sc.Name)
		if !namespacedSysctl(name) {
			refuse("sysctl %q is not namespaced: setting it for a pod would change the whole device", sc.Name)
			continue
		}
		if w.Sysctls == nil {
			w.Sysctls = map[string]string{}
		}
		w.Sysctls[name] = sc.Value
	}
	if p := ps.SupplementalGroupsPolicy; p != nil && *p != corev1.SupplementalGroupsPolicyMerge {
		refuse("supplementalGroupsPolicy %q is not supported: podman always merges the groups of the image's /etc/group", *p)
	}
	if ps.SELinuxChangePolicy != nil {
		ignore("securityContext.seLinuxChangePolicy (volumes are created for each pod and labelled by podman)")
	}
}

// normalizeSysctl spells a sysctl with dots, as kubelet does: a name whose
// first separator is '/' uses '/' between parts and may hold dots inside
// them ("net/ipv4/conf/eth0.100/forwarding").
func normalizeSysctl(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}

// namespacedSysctl reports whether name lives in a namespace a pod has of
// its own (kubelet's list: IPC and network sysctls).
func namespacedSysctl(name string) bool {
	switch {
	case name == "kernel.sem",
		strings.HasPrefix(name, "kernel.shm"),
		strings.HasPrefix(name, "kernel.msg"),
		strings.HasPrefix(name, "fs.mqueue."),
		strings.HasPrefix(name, "net."):
		return true
	}
	return false
}

// relativeInside reports whether p is a relative path that stays inside
// its directory.
func relativeInside(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return false
		}
	}
	return true
}

func firstNonNil[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// usesProtocol6 names the security and network fields of w that a device
// speaking protocol 5 or older would silently drop, or returns "".
func usesProtocol6(w *bridge.Workload) string {
	var used []string
	if w.HostPID {
		used = append(used, "hostPID")
	}
	if w.HostIPC {
		used = append(used, "hostIPC")
	}
	if w.ShareProcessNamespace {
		used = append(used, "shareProcessNamespace")
	}
	if w.DNS != nil {
		used = append(used, "dnsConfig")
	}
	if len(w.HostAliases) > 0 {
		used = append(used, "hostAliases")
	}
	if len(w.Sysctls) > 0 {
		used = append(used, "sysctls")
	}
	if w.FSGroup != nil {
		used = append(used, "fsGroup")
	}
	for _, c := range append(slices.Clone(w.InitContainers), w.Containers...) {
		s := c.Security
		if s == nil {
			continue
		}
		old := bridge.Security{RunAsUser: s.RunAsUser, RunAsGroup: s.RunAsGroup, Privileged: s.Privileged,
			ReadOnlyRootFilesystem: s.ReadOnlyRootFilesystem, CapAdd: s.CapAdd, CapDrop: s.CapDrop}
		if !reflect.DeepEqual(*s, old) {
			used = append(used, "container "+c.Name+" securityContext")
		}
	}
	return strings.Join(used, ", ")
}
