// Package controlplane runs a real, local Kubernetes control plane — etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler — on loopback
// ports, for integration tests and the demo.
//
// The binaries come from hack/controlplane-build.sh, which builds them once
// from the Go module proxy; BinDir finds (or builds) them. Start generates
// a cluster CA and every certificate with crypto/x509, starts the
// processes in a working directory of their own (data, certificates,
// kubeconfigs, one log file per process) and returns when pods can be
// created. Stop ends every process it started, by PID, in reverse order.
//
//	func TestSomething(t *testing.T) {
//		bin, err := controlplane.BinDir()
//		if err != nil {
//			t.Skip(err)
//		}
//		cp, err := controlplane.Start(t.Context(), controlplane.Config{
//			BinDir:                 bin,
//			Dir:                    t.TempDir(),
//			NodeMonitorGracePeriod: 16 * time.Second,
//		})
//		if err != nil {
//			t.Fatal(err)
//		}
//		t.Cleanup(func() { cp.Stop() })
//
//		client := kubernetes.NewForConfigOrDie(cp.RESTConfig) // cluster admin
//		kubeconfig, err := cp.ClientKubeconfig("vk-fleet-provider", "vk-fleet:providers")
//		out, err := cp.Kubectl(t.Context(), "get", "nodes")
//		...
//	}
//
// Environment: VKF_CONTROLPLANE_BIN points BinDir at a directory of
// binaries; VKF_NO_BUILD=1 makes it fail rather than start a build of
// several minutes.
package controlplane
