package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// execIn runs cmd in container c of pod ns/name with kubectl exec and
// returns its output; it fails t when the exit code is not want.
func execIn(t *testing.T, ns, name, c string, want int, cmd ...string) string {
	t.Helper()
	out, errOut, code := kubectl(t, t.Context(), "", append([]string{"exec", "-n", ns, name, "-c", c, "--"}, cmd...)...)
	if code != want {
		t.Errorf("kubectl exec %s/%s -c %s -- %v: exit %d, want %d (stdout %q, stderr %q)", ns, name, c, cmd, code, want, out, errOut)
	}
	return out + errOut
}

// procStatus returns field of /proc/self/status in container c.
func procStatus(t *testing.T, ns, name, c, field string) string {
	t.Helper()
	for line := range strings.SplitSeq(execIn(t, ns, name, c, 0, "cat", "/proc/self/status"), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "<none>"
}

// A pod's security context and network fields take effect inside its
// containers on the device, as a kubelet applies them; runAsNonRoot with an
// image that runs as root waits with kubelet's reason and message.
func TestSecurityContextOnTheDevice(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "secctx")
	pods := cluster.Client.CoreV1().Pods(ns)

	// A Localhost seccomp profile in the device's seccomp directory.
	seccompDir := filepath.Join(cluster.AgentStateDir(devA), "seccomp")
	if err := os.MkdirAll(seccompDir, 0o755); err != nil {
		t.Fatal(err)
	}
	noMkdir := `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`
	if err := os.WriteFile(filepath.Join(seccompDir, "no-mkdir.json"), []byte(noMkdir), 0o644); err != nil {
		t.Fatal(err)
	}

	secure := sleeper(ns, "secure", devA)
	secure.Spec.ShareProcessNamespace = ptrTo(true)
	secure.Spec.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"alias.example", "other.example"}}}
	secure.Spec.DNSPolicy = corev1.DNSNone
	secure.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.10"}, Searches: []string{"pod.example"},
		Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("2")}}}
	secure.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: ptrTo(int64(1000)), RunAsGroup: ptrTo(int64(3000)), RunAsNonRoot: ptrTo(true),
		FSGroup: ptrTo(int64(2000)), SupplementalGroups: []int64{4000},
		Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "20000 30000"}, {Name: "kernel.shm_rmid_forced", Value: "1"}},
	}
	secure.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	main := &secure.Spec.Containers[0]
	main.Command = []string{"sleep", "3601"}
	main.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	main.SecurityContext = &corev1.SecurityContext{
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}},
		ReadOnlyRootFilesystem:   ptrTo(true),
		AllowPrivilegeEscalation: ptrTo(false),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	secure.Spec.Containers = append(secure.Spec.Containers,
		corev1.Container{Name: "side", Image: cluster.Image, Command: []string{"sleep", "3602"},
			SecurityContext: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}},
		corev1.Container{Name: "local", Image: cluster.Image, Command: []string{"sleep", "3603"},
			SecurityContext: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{
				Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptrTo("no-mkdir.json")}}},
	)

	hostns := sleeper(ns, "hostns", devA)
	hostns.Spec.HostPID, hostns.Spec.HostIPC, hostns.Spec.HostNetwork = true, true, true
	hostns.Spec.HostAliases = []corev1.HostAlias{{IP: "10.1.2.4", Hostnames: []string{"device-alias.example"}}}
	hostns.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"extra.example"}} // dnsPolicy ClusterFirst: the device's, extended

	rootRefused := sleeper(ns, "root-refused", devA)
	rootRefused.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true)} // the image runs as root

	for _, p := range []*corev1.Pod{secure, hostns, rootRefused} {
		if _, err := pods.Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	var refusedUID string
	eventually(t, 2*time.Minute, "root-refused waiting with CreateContainerConfigError", func(ctx context.Context) (bool, string) {
		p, err := pods.Get(ctx, "root-refused", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, fmt.Sprintf("%v %+v", err, p.Status)
		}
		refusedUID = string(p.UID)
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w.Reason == "CreateContainerConfigError", w.Reason + ": " + w.Message
	})
	p, err := pods.Get(t.Context(), "root-refused", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantMsg := fmt.Sprintf(`container has runAsNonRoot and image will run as root (pod: "root-refused_%s(%s)", container: main)`, ns, refusedUID)
	if w := p.Status.ContainerStatuses[0].State.Waiting; w.Message != wantMsg || p.Status.Phase != corev1.PodPending {
		t.Errorf("root-refused: %s, waiting %q, want Pending with %q", p.Status.Phase, w.Message, wantMsg)
	}

	waitRunning(t, ns, "secure")
	// Users and groups; fsGroup owns the emptyDir.
	id := execIn(t, ns, "secure", "main", 0, "id")
	for _, want := range []string{"uid=1000", "gid=3000", "2000", "4000"} {
		if !strings.Contains(id, want) {
			t.Errorf("id = %q, want %s", id, want)
		}
	}
	if g := strings.TrimSpace(execIn(t, ns, "secure", "main", 0, "sh", "-c", "touch /data/f && stat -c %g /data/f")); g != "2000" {
		t.Errorf("group of a new file in the emptyDir = %q, want 2000 (fsGroup)", g)
	}
	// Read-only root filesystem, /tmp included.
	execIn(t, ns, "secure", "main", 1, "touch", "/x")
	execIn(t, ns, "secure", "main", 1, "touch", "/tmp/x")
	// Capabilities, no_new_privs, seccomp.
	if v := procStatus(t, ns, "secure", "main", "CapBnd"); v != "0000000000000400" {
		t.Errorf("CapBnd = %s, want NET_BIND_SERVICE only (0x400)", v)
	}
	if v := procStatus(t, ns, "secure", "main", "NoNewPrivs"); v != "1" {
		t.Errorf("NoNewPrivs = %s, want 1", v)
	}
	if v := procStatus(t, ns, "secure", "main", "Seccomp"); v != "2" {
		t.Errorf("main (RuntimeDefault): Seccomp = %s, want 2", v)
	}
	if v := procStatus(t, ns, "secure", "side", "Seccomp"); v != "0" {
		t.Errorf("side (Unconfined): Seccomp = %s, want 0", v)
	}
	if v := procStatus(t, ns, "secure", "side", "NoNewPrivs"); v != "0" {
		t.Errorf("side: NoNewPrivs = %s, want 0", v)
	}
	if out := execIn(t, ns, "secure", "local", 1, "mkdir", "/tmp/d"); !strings.Contains(out, "not permitted") {
		t.Errorf("mkdir under the Localhost profile: %q, want EPERM", out)
	}
	// Sysctls in the pod's namespaces.
	if v := execIn(t, ns, "secure", "main", 0, "cat", "/proc/sys/net/ipv4/ip_local_port_range", "/proc/sys/kernel/shm_rmid_forced"); strings.Join(strings.Fields(v), " ") != "20000 30000 1" {
		t.Errorf("sysctls = %q", v)
	}
	// shareProcessNamespace: main sees side's process.
	if ps := execIn(t, ns, "secure", "main", 0, "ps", "-o", "args"); !strings.Contains(ps, "sleep 3602") {
		t.Errorf("main does not see side's process:\n%s", ps)
	}
	// hostAliases, hostname, dnsPolicy None.
	hosts := execIn(t, ns, "secure", "side", 0, "cat", "/etc/hosts")
	if !strings.Contains(hosts, "10.1.2.3") || !strings.Contains(hosts, "alias.example") || !strings.Contains(hosts, "other.example") {
		t.Errorf("/etc/hosts lacks the host aliases:\n%s", hosts)
	}
	if h := strings.TrimSpace(execIn(t, ns, "secure", "side", 0, "hostname")); h != "secure" {
		t.Errorf("hostname = %q, want the pod's name", h)
	}
	if r := execIn(t, ns, "secure", "side", 0, "cat", "/etc/resolv.conf"); r != "nameserver 10.0.0.10\nsearch pod.example\noptions ndots:2\n" {
		t.Errorf("resolv.conf with dnsPolicy None:\n%s", r)
	}

	waitRunning(t, ns, "hostns")
	for _, nsName := range []string{"pid", "ipc", "net"} {
		host, err := os.Readlink("/proc/self/ns/" + nsName)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(execIn(t, ns, "hostns", "main", 0, "readlink", "/proc/self/ns/"+nsName)); got != host {
			t.Errorf("hostns: %s namespace %s, want the device's %s", nsName, got, host)
		}
	}
	if hosts := execIn(t, ns, "hostns", "main", 0, "cat", "/etc/hosts"); !strings.Contains(hosts, "10.1.2.4\tdevice-alias.example") {
		t.Errorf("hostns: /etc/hosts lacks the host alias:\n%s", hosts)
	}
	r := execIn(t, ns, "hostns", "main", 0, "cat", "/etc/resolv.conf")
	if !strings.Contains(r, "extra.example") {
		t.Errorf("hostns: resolv.conf lacks the dnsConfig search:\n%s", r)
	}
	if hostConf, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		for line := range strings.SplitSeq(string(hostConf), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" && !strings.Contains(r, line) {
				t.Errorf("hostns: resolv.conf lacks the device's %q:\n%s", line, r)
			}
		}
	}
}
