package provider

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// maxHostnameLen is the longest hostname kubelet gives a pod.
const maxHostnameLen = 63

// podNetwork fills w's namespace, hostname and DNS fields from pod, as
// kubelet would on a node without cluster DNS.
//
// DNS: a device has no cluster DNS server, so dnsPolicy ClusterFirst (the
// default) and ClusterFirstWithHostNet fall back to Default — the device's
// own resolv.conf — exactly as a kubelet configured without clusterDNS does.
// A dnsConfig is appended to it (policy None: it is the whole resolv.conf).
func podNetwork(pod *corev1.Pod, w *bridge.Workload, refuse, ignore func(string, ...any)) {
	spec := &pod.Spec
	w.HostPID = spec.HostPID
	w.HostIPC = spec.HostIPC
	w.ShareProcessNamespace = spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace
	if w.HostPID && w.ShareProcessNamespace {
		refuse("shareProcessNamespace and hostPID cannot both be set")
	}

	if !spec.HostNetwork {
		w.Hostname = podHostname(pod)
	}
	if spec.Subdomain != "" {
		ignore("subdomain %q (a device has no cluster DNS: the pod's FQDN resolves nowhere and is not in its /etc/hosts)", spec.Subdomain)
		if spec.SetHostnameAsFQDN != nil && *spec.SetHostnameAsFQDN {
			refuse("setHostnameAsFQDN: a device has no cluster domain to form the pod's FQDN")
		}
	}

	switch spec.DNSPolicy {
	case corev1.DNSNone:
		if spec.DNSConfig == nil {
			refuse("dnsPolicy None needs a dnsConfig")
			break
		}
		w.DNS = &bridge.DNS{Replace: true}
	case corev1.DNSClusterFirstWithHostNet:
		ignore("dnsPolicy ClusterFirstWithHostNet (a device has no cluster DNS: the pod uses the device's resolv.conf, as with policy Default)")
	case "", corev1.DNSClusterFirst, corev1.DNSDefault:
	default:
		refuse("dnsPolicy %q is not supported", spec.DNSPolicy)
	}
	if dc := spec.DNSConfig; dc != nil {
		if w.DNS == nil {
			w.DNS = &bridge.DNS{}
		}
		w.DNS.Nameservers = dc.Nameservers
		w.DNS.Searches = dc.Searches
		for _, o := range dc.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			w.DNS.Options = append(w.DNS.Options, opt)
		}
	}

	for _, a := range spec.HostAliases {
		w.HostAliases = append(w.HostAliases, bridge.HostAlias{IP: a.IP, Hostnames: a.Hostnames})
	}
}

// podHostname is the hostname kubelet gives a pod outside the host's
// network: spec.hostname, or the pod's name cut to 63 characters without
// a trailing '-' or '.'.
func podHostname(pod *corev1.Pod) string {
	if o := pod.Spec.HostnameOverride; o != nil && *o != "" {
		return *o
	}
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	h := pod.Name
	if len(h) > maxHostnameLen {
		h = strings.TrimRight(h[:maxHostnameLen], "-.")
	}
	return h
}
