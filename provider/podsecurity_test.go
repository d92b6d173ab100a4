package provider

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

func ptrTo[T any](v T) *T { return &v }

// securePod is basePod with every security-context and network field a
// device honours.
func securePod() *corev1.Pod {
	pod := basePod()
	s := &pod.Spec
	s.HostPID, s.HostIPC = true, true
	s.DNSPolicy = corev1.DNSNone
	s.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.10"}, Searches: []string{"a.example"},
		Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("2")}, {Name: "edns0"}}}
	s.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"a", "b"}}}
	s.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: ptrTo(int64(1000)), RunAsGroup: ptrTo(int64(3000)), RunAsNonRoot: ptrTo(true),
		FSGroup: ptrTo(int64(2000)), SupplementalGroups: []int64{4000, 2000},
		Sysctls:        []corev1.Sysctl{{Name: "net/ipv4/ip_local_port_range", Value: "20000 30000"}, {Name: "kernel.shm_rmid_forced", Value: "1"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		SELinuxOptions: &corev1.SELinuxOptions{Type: "spc_t", Level: "s0:c1,c2"},
	}
	s.Containers[0].SecurityContext = &corev1.SecurityContext{
		RunAsUser:                ptrTo(int64(1001)),
		Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
		ReadOnlyRootFilesystem:   ptrTo(true),
		AllowPrivilegeEscalation: ptrTo(false),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptrTo("profiles/a.json")},
		AppArmorProfile:          &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
		ProcMount:                ptrTo(corev1.UnmaskedProcMount),
	}
	return pod
}

func TestTranslateSecurityAndNetwork(t *testing.T) {
	p := testProvider(t)
	w, ignored, refusal, _ := p.translate(t.Context(), securePod())
	if refusal != "" || len(ignored) != 0 {
		t.Fatalf("refusal %q ignored %v", refusal, ignored)
	}
	if !w.HostPID || !w.HostIPC || w.ShareProcessNamespace || *w.FSGroup != 2000 {
		t.Errorf("pod namespaces and fsGroup: %+v", w)
	}
	wantDNS := &bridge.DNS{Replace: true, Nameservers: []string{"10.0.0.10"}, Searches: []string{"a.example"}, Options: []string{"ndots:2", "edns0"}}
	if !reflect.DeepEqual(w.DNS, wantDNS) {
		t.Errorf("dns = %+v, want %+v", w.DNS, wantDNS)
	}
	if !reflect.DeepEqual(w.HostAliases, []bridge.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"a", "b"}}}) {
		t.Errorf("host aliases = %+v", w.HostAliases)
	}
	if !reflect.DeepEqual(w.Sysctls, map[string]string{"net.ipv4.ip_local_port_range": "20000 30000", "kernel.shm_rmid_forced": "1"}) {
		t.Errorf("sysctls = %v", w.Sysctls)
	}
	want := &bridge.Security{
		RunAsUser: ptrTo(int64(1001)), RunAsGroup: ptrTo(int64(3000)), RunAsNonRoot: true,
		ReadOnlyRootFilesystem: true, CapAdd: []string{"NET_ADMIN"}, CapDrop: []string{"ALL"},
		SupplementalGroups: []int64{2000, 4000}, NoNewPrivileges: true,
		Seccomp: bridge.SeccompLocalhost, SeccompProfile: "profiles/a.json", AppArmor: "Unconfined",
		SELinux: []string{"type:spc_t", "level:s0:c1,c2"}, UnmaskedProc: true,
	}
	if got := w.Containers[0].Security; !reflect.DeepEqual(got, want) {
		t.Errorf("security =\n%+v\nwant\n%+v", *got, *want)
	}

	// Nothing set: nothing sent.
	w, _, _, _ = p.translate(t.Context(), basePod())
	if w.Containers[0].Security != nil || w.DNS != nil || w.Sysctls != nil {
		t.Errorf("a plain pod carries security or DNS: %+v %+v", w.Containers[0].Security, w.DNS)
	}
}

func TestTranslateHostnameAndDNSPolicies(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Name = strings.Repeat("a", 62) + "-bcd"
	pod.Spec.DNSPolicy = corev1.DNSClusterFirst
	pod.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"x.example"}}
	w, ignored, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" || len(ignored) != 0 {
		t.Fatalf("refusal %q ignored %v", refusal, ignored)
	}
	if w.Hostname != strings.Repeat("a", 62) {
		t.Errorf("hostname %q: want the name cut to 63 without the trailing '-'", w.Hostname)
	}
	if w.DNS == nil || w.DNS.Replace || !reflect.DeepEqual(w.DNS.Searches, []string{"x.example"}) {
		t.Errorf("ClusterFirst with a dnsConfig: %+v, want the device's resolv.conf extended", w.DNS)
	}

	pod = basePod()
	pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	pod.Spec.Subdomain = "sub"
	pod.Spec.ShareProcessNamespace = ptrTo(true)
	w, ignored, refusal, _ = p.translate(t.Context(), pod)
	if refusal != "" || !w.ShareProcessNamespace {
		t.Fatalf("refusal %q, workload %+v", refusal, w)
	}
	if msg := strings.Join(ignored, "; "); !strings.Contains(msg, "ClusterFirstWithHostNet") || !strings.Contains(msg, `subdomain "sub"`) {
		t.Errorf("ignored = %q, want notes on the policy and the subdomain", msg)
	}
}

func TestTranslateRefusesSecurityADeviceCannotHonour(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Spec.Subdomain = "sub"
	pod.Spec.SetHostnameAsFQDN = ptrTo(true)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		Sysctls:                  []corev1.Sysctl{{Name: "vm.swappiness", Value: "1"}},
		SupplementalGroupsPolicy: ptrTo(corev1.SupplementalGroupsPolicyStrict),
	}
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptrTo("../etc/x.json")},
		ProcMount:      ptrTo(corev1.ProcMountType("Weird")),
	}
	_, _, refusal, _ := p.translate(t.Context(), pod)
	for _, want := range []string{`sysctl "vm.swappiness" is not namespaced`, "supplementalGroupsPolicy", "localhostProfile relative", `procMount "Weird"`, "setHostnameAsFQDN"} {
		if !strings.Contains(refusal, want) {
			t.Errorf("refusal %q does not mention %q", refusal, want)
		}
	}

	// A device that would drop the fields silently is refused them.
	p.devices = map[string]*device{"pi-1": {name: "pi-1", hb: &bridge.Heartbeat{Time: time.Now(), Inventory: bridge.Inventory{ProtocolVersion: 5}}}}
	_, _, refusal, _ = p.translate(t.Context(), securePod())
	if !strings.Contains(refusal, "too old for hostPID, hostIPC, dnsConfig") || !strings.Contains(refusal, "protocol 5, needs 6") {
		t.Errorf("refusal for a v5 device: %q", refusal)
	}
	if _, _, refusal, _ = p.translate(t.Context(), basePod()); refusal != "" {
		t.Errorf("a plain pod refused on a v5 device: %q", refusal)
	}
}
