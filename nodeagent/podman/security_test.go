//go:build remote

package podman

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// run runs cmd in container c of pod uid and returns its output; a
// non-zero exit fails t unless wantFail.
func run(t *testing.T, rt *Runtime, uid, c string, wantFail bool, cmd ...string) string {
	t.Helper()
	var out bytes.Buffer
	code, err := rt.Exec(t.Context(), uid, c, cmd, nodeagent.StreamIO{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %v in %s: %v", cmd, c, err)
	}
	if (code != 0) != wantFail {
		t.Errorf("exec %v in %s: exit %d, want failure %v; output %q", cmd, c, code, wantFail, out.String())
	}
	return out.String()
}

// statusField returns field of /proc/self/status as c sees it.
func statusField(t *testing.T, rt *Runtime, uid, c, field string) string {
	t.Helper()
	for line := range strings.SplitSeq(run(t, rt, uid, c, false, "cat", "/proc/self/status"), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/self/status of %s", field, c)
	return ""
}

// One pod, three containers: every security-context and pod-network field
// a device maps to podman, checked from inside the containers.
func TestSecurityContextInsideTheContainer(t *testing.T) {
	e := setup(t)
	state := t.TempDir()
	hostResolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(hostResolv, []byte("# the device's\nnameserver 192.0.2.1\nsearch host.example\noptions ndots:1 timeout:3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, "seccomp", "profiles"), 0o755); err != nil {
		t.Fatal(err)
	}
	noMkdir := `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`
	if err := os.WriteFile(filepath.Join(state, "seccomp", "profiles", "no-mkdir.json"), []byte(noMkdir), 0o644); err != nil {
		t.Fatal(err)
	}
	rt, err := New(t.Context(), e.svc.URI, uniqueName("dev"), WithStateDir(state), WithResolvConf(hostResolv),
		WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}

	main := sh("main", e.image, "sleep 3601")
	main.Mounts = []bridge.Mount{{Volume: "data", Path: "/data"}, {Volume: "conf", Path: "/conf"}}
	main.Security = &bridge.Security{
		RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(3000)), SupplementalGroups: []int64{2000, 4000},
		RunAsNonRoot: true, CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"},
		ReadOnlyRootFilesystem: true, NoNewPrivileges: true, Seccomp: bridge.SeccompRuntimeDefault,
		SELinux: []string{"type:spc_t"}, // no SELinux on the device: no effect, as with kubelet
	}
	side := sh("side", e.image, "sleep 3602")
	side.Security = &bridge.Security{Seccomp: bridge.SeccompUnconfined, UnmaskedProc: true, AppArmor: bridge.SeccompUnconfined}
	local := sh("local", e.image, "sleep 3603")
	local.Security = &bridge.Security{Seccomp: bridge.SeccompLocalhost, SeccompProfile: "profiles/no-mkdir.json"}

	w := workload("secure", main, side, local)
	w.FSGroup = ptr(int64(2000))
	w.Volumes = []bridge.Volume{{Name: "data", EmptyDir: true}, {Name: "conf", Files: map[string][]byte{"a.conf": []byte("x")}}}
	w.ShareProcessNamespace = true
	w.Sysctls = map[string]string{"net.ipv4.ip_local_port_range": "20000 30000", "kernel.shm_rmid_forced": "1"}
	w.HostAliases = []bridge.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"alias.example", "other.example"}}}
	w.DNS = &bridge.DNS{Nameservers: []string{"10.0.0.10"}, Searches: []string{"pod.example"}, Options: []string{"ndots:2", "edns0"}}
	create(t, rt, w, "h")
	for _, c := range []string{"main", "side", "local"} {
		waitState(t, rt, w.UID, c, nodeagent.ContainerRunning)
	}

	// Users and groups, fsGroup owning the volumes.
	id := run(t, rt, w.UID, "main", false, "id")
	for _, want := range []string{"uid=1000", "gid=3000", "2000", "4000"} {
		if !strings.Contains(id, want) {
			t.Errorf("id = %q, want %s", id, want)
		}
	}
	run(t, rt, w.UID, "main", false, "touch", "/data/f")
	if g := strings.TrimSpace(run(t, rt, w.UID, "main", false, "stat", "-c", "%g", "/data/f", "/conf/a.conf")); g != "2000\n2000" {
		t.Errorf("group of a new file in the emptyDir and of a ConfigMap file = %q, want 2000 for both (fsGroup)", g)
	}
	// Read-only root, /tmp included.
	run(t, rt, w.UID, "main", true, "touch", "/x")
	run(t, rt, w.UID, "main", true, "touch", "/tmp/x")
	// Capabilities, no_new_privs, seccomp.
	if v := statusField(t, rt, w.UID, "main", "CapBnd"); v != "0000000000000400" {
		t.Errorf("CapBnd = %s, want only NET_BIND_SERVICE (0x400)", v)
	}
	if v := statusField(t, rt, w.UID, "main", "NoNewPrivs"); v != "1" {
		t.Errorf("NoNewPrivs = %s, want 1", v)
	}
	if v := statusField(t, rt, w.UID, "main", "Seccomp"); v != "2" {
		t.Errorf("main: Seccomp = %s, want 2 (filter)", v)
	}
	if v := statusField(t, rt, w.UID, "side", "Seccomp"); v != "0" {
		t.Errorf("side (Unconfined): Seccomp = %s, want 0", v)
	}
	if v := statusField(t, rt, w.UID, "side", "NoNewPrivs"); v != "0" {
		t.Errorf("side: NoNewPrivs = %s, want 0 (allowPrivilegeEscalation unset)", v)
	}
	if v := statusField(t, rt, w.UID, "local", "Seccomp"); v != "2" {
		t.Errorf("local: Seccomp = %s, want 2 (filter)", v)
	}
	if out := run(t, rt, w.UID, "local", true, "mkdir", "/tmp/d"); !strings.Contains(out, "not permitted") {
		t.Errorf("mkdir under the Localhost profile: %q, want EPERM", out)
	}
	// procMount: masked paths are mounts over /proc in main, not in side.
	if m := run(t, rt, w.UID, "main", false, "cat", "/proc/self/mounts"); !strings.Contains(m, " /proc/timer_list ") {
		t.Errorf("main: /proc/timer_list is not masked:\n%s", m)
	}
	if m := run(t, rt, w.UID, "side", false, "cat", "/proc/self/mounts"); strings.Contains(m, " /proc/timer_list ") {
		t.Errorf("side (procMount Unmasked): /proc/timer_list is masked:\n%s", m)
	}
	// Sysctls.
	if v := run(t, rt, w.UID, "main", false, "cat", "/proc/sys/net/ipv4/ip_local_port_range", "/proc/sys/kernel/shm_rmid_forced"); strings.Join(strings.Fields(v), " ") != "20000 30000 1" {
		t.Errorf("sysctls = %q", v)
	}
	// One PID namespace: main sees side's process.
	if ps := run(t, rt, w.UID, "main", false, "ps", "-o", "args"); !strings.Contains(ps, "sleep 3602") {
		t.Errorf("main does not see side's process (shareProcessNamespace):\n%s", ps)
	}
	// /etc/hosts and resolv.conf.
	hosts := run(t, rt, w.UID, "side", false, "cat", "/etc/hosts")
	if !strings.Contains(hosts, "10.1.2.3") || !strings.Contains(hosts, "alias.example") || !strings.Contains(hosts, "other.example") {
		t.Errorf("/etc/hosts lacks the host aliases:\n%s", hosts)
	}
	want := "nameserver 192.0.2.1\nnameserver 10.0.0.10\nsearch host.example pod.example\noptions timeout:3 ndots:2 edns0\n"
	for _, c := range []string{"main", "side"} {
		if got := run(t, rt, w.UID, c, false, "cat", "/etc/resolv.conf"); got != want {
			t.Errorf("%s: resolv.conf =\n%s\nwant\n%s", c, got, want)
		}
	}
}

// hostPID and hostIPC: the containers are in the device's namespaces.
func TestHostPIDAndIPC(t *testing.T) {
	e := setup(t)
	w := workload("hostns", sh("main", e.image, "sleep 3600"))
	w.HostPID, w.HostIPC, w.HostNetwork = true, true, true
	w.HostAliases = []bridge.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"alias.example"}}}
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	if hosts := run(t, e.rt, w.UID, "main", false, "cat", "/etc/hosts"); !strings.Contains(hosts, "alias.example") {
		t.Errorf("hostNetwork pod: /etc/hosts lacks the host aliases:\n%s", hosts)
	}
	for _, ns := range []string{"pid", "ipc", "net"} {
		host, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(run(t, e.rt, w.UID, "main", false, "readlink", "/proc/self/ns/"+ns)); got != host {
			t.Errorf("%s namespace in the container %s, want the device's %s", ns, got, host)
		}
	}
	if out := run(t, e.rt, w.UID, "main", false, "ls", fmt.Sprintf("/proc/%d", os.Getpid())); out == "" {
		t.Errorf("the container does not see the test's process")
	}

	// Without them, a pod has namespaces of its own.
	plain := workload("podns", sh("main", e.image, "sleep 3600"))
	create(t, e.rt, plain, "h")
	waitState(t, e.rt, plain.UID, "main", nodeagent.ContainerRunning)
	for _, ns := range []string{"pid", "ipc"} {
		host, _ := os.Readlink("/proc/self/ns/" + ns)
		if got := strings.TrimSpace(run(t, e.rt, plain.UID, "main", false, "readlink", "/proc/self/ns/"+ns)); got == host {
			t.Errorf("a plain pod shares the device's %s namespace", ns)
		}
	}
}

// runAsNonRoot refuses root with kubelet's reason and message; a non-root
// user runs.
func TestRunAsNonRoot(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		name string
		user *int64
		msg  string
	}{
		{"image-root", nil, `container has runAsNonRoot and image will run as root (pod: "image-root_default(%s)", container: main)`},
		{"user-root", ptr(int64(0)), `container's runAsUser breaks non-root policy (pod: "user-root_default(%s)", container: main)`},
	} {
		c := sh("main", e.image, "sleep 3600")
		c.Security = &bridge.Security{RunAsNonRoot: true, RunAsUser: tc.user}
		w := workload(tc.name, c)
		err := e.rt.CreatePod(t.Context(), w, "h")
		var ce *nodeagent.ContainerError
		if !errors.As(err, &ce) || ce.Reason != nodeagent.ReasonCreateContainerConfigError || ce.Container != "main" {
			t.Fatalf("%s: CreatePod: %v, want a CreateContainerConfigError of main", tc.name, err)
		}
		if want := fmt.Sprintf(tc.msg, w.UID); ce.Err.Error() != want {
			t.Errorf("%s: message %q, want %q", tc.name, ce.Err.Error(), want)
		}
		if p := podState(t, e.rt, w.UID); p != nil {
			t.Errorf("%s: the refused pod was left behind: %+v", tc.name, *p)
		}
	}
	c := sh("main", e.image, "sleep 3600")
	c.Security = &bridge.Security{RunAsNonRoot: true, RunAsUser: ptr(int64(1000))}
	w := workload("non-root", c)
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
}

func TestResolvConf(t *testing.T) {
	host := []byte("nameserver 1.1.1.1 # comment\nnameserver 8.8.8.8\nsearch a b\noptions ndots:1 rotate\n")
	for _, tc := range []struct {
		name string
		host []byte
		dns  bridge.DNS
		want string
	}{
		{"append", host, bridge.DNS{Nameservers: []string{"8.8.8.8", "9.9.9.9"}, Searches: []string{"c"}, Options: []string{"ndots:5"}},
			"nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\nsearch a b c\noptions rotate ndots:5\n"},
		{"none", nil, bridge.DNS{Replace: true, Searches: []string{"x"}}, "search x\n"},
		{"empty", nil, bridge.DNS{Replace: true}, ""},
	} {
		if got := string(resolvConf(tc.host, &tc.dns)); got != tc.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
}

func TestSplitImageUser(t *testing.T) {
	for user, want := range map[string]string{"": "uid 0", "0": "uid 0", "0:0": "uid 0", "1000:10": "uid 1000", "root": "name root", "app:app": "name app"} {
		uid, name := splitImageUser(user)
		got := "name " + name
		if uid != nil {
			got = fmt.Sprintf("uid %d", *uid)
		}
		if got != want {
			t.Errorf("splitImageUser(%q) = %s, want %s", user, got, want)
		}
	}
}

// kubelet's /etc/hosts, byte for byte (managedHostsFileContent), and the
// host network's.
func TestHostsFileContent(t *testing.T) {
	aliases := []bridge.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo", "bar"}}, {IP: "10.0.0.1", Hostnames: []string{"baz"}}}
	want := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
		"10.88.0.7\tweb\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n10.0.0.1\tbaz\n"
	if got := string(managedHosts("10.88.0.7", "web", aliases)); got != want {
		t.Errorf("managed hosts =\n%q\nwant\n%q", got, want)
	}
	if got := string(managedHosts("10.88.0.7", "web", nil)); !strings.HasSuffix(got, "fe00::2\tip6-allrouters\n10.88.0.7\tweb\n") {
		t.Errorf("without aliases =\n%q", got)
	}
	got := string(hostNetworkHosts([]byte("127.0.0.1 localhost\n"), aliases[1:]))
	if want := "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# Entries added by HostAliases.\n10.0.0.1\tbaz\n"; got != want {
		t.Errorf("host network hosts =\n%q\nwant\n%q", got, want)
	}
}

// A pod on the pod network: its sandbox starts first, its IP fills
// status.podIP(s) in env and is the hostname's line of the kubelet-managed
// /etc/hosts that every container gets — except one that mounts its own
// (the conformance spec "KubeletManagedEtcHosts").
func TestPodIPEnvAndManagedHosts(t *testing.T) {
	e := setup(t)
	own := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(own, []byte("1.2.3.4 mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	main := sh("main", e.image, "sleep 3600")
	main.Env = []bridge.EnvVar{{Name: "POD_IP", FieldRef: bridge.FieldPodIP}, {Name: "POD_IPS", FieldRef: bridge.FieldPodIPs}, {Name: "A", Value: "1"}}
	other := sh("own", e.image, "sleep 3600")
	other.Mounts = []bridge.Mount{{Volume: "etc", Path: "/etc/hosts"}}
	w := workload("hosts", main, other)
	w.Hostname = "web-0"
	w.HostAliases = []bridge.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo", "bar"}}}
	w.Volumes = []bridge.Volume{{Name: "etc", HostPath: own}}
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	waitState(t, e.rt, w.UID, "own", nodeagent.ContainerRunning)

	ip := podState(t, e.rt, w.UID).PodIP
	if ip == "" {
		t.Fatal("the pod has no IP")
	}
	if got := run(t, e.rt, w.UID, "main", false, "sh", "-c", `echo "$POD_IP $POD_IPS $A"`); got != ip+" "+ip+" 1\n" {
		t.Errorf("env = %q, want the pod's IP %s twice", got, ip)
	}
	if got, want := run(t, e.rt, w.UID, "main", false, "cat", "/etc/hosts"), string(managedHosts(ip, "web-0", w.HostAliases)); got != want {
		t.Errorf("main: /etc/hosts =\n%s\nwant\n%s", got, want)
	}
	if got := run(t, e.rt, w.UID, "own", false, "cat", "/etc/hosts"); got != "1.2.3.4 mine\n" {
		t.Errorf("own: /etc/hosts = %q, want the file it mounts", got)
	}
	// The workload given is not changed: the next creation fills it anew.
	if w.Containers[0].Env[0].FieldRef != bridge.FieldPodIP || w.Containers[0].Env[0].Value != "" {
		t.Errorf("the workload was changed: %+v", w.Containers[0].Env[0])
	}

	// A variable nobody filled (the agent fills the host's IPs) is never
	// set empty: the pod is not created.
	bad := sh("main", e.image, "sleep 3600")
	bad.Env = []bridge.EnvVar{{Name: "HOST_IP", FieldRef: bridge.FieldHostIP}}
	wb := workload("unfilled", bad)
	err := e.rt.CreatePod(t.Context(), wb, "h")
	var ce *nodeagent.ContainerError
	if !errors.As(err, &ce) || ce.Reason != nodeagent.ReasonCreatePodSandboxError || !strings.Contains(err.Error(), "env HOST_IP (status.hostIP)") {
		t.Errorf("CreatePod with an unfilled variable: %v", err)
	}
	if p, err := e.rt.findPod(t.Context(), wb.UID); err != nil || p != nil {
		t.Errorf("the pod is left behind: %v %v", p, err)
	}
}
