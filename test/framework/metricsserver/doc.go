// Package metricsserver runs the real metrics-server against a test
// control plane (package controlplane) and registers it as the
// metrics.k8s.io API, so that `kubectl top node` and `kubectl top pod`
// work in e2e tests.
//
// The binary comes from hack/metrics-server-build.sh, which builds it
// once from the Go module proxy; BinDir finds (or builds) it. Start gives
// metrics-server the RBAC of its own manifests, a serving certificate
// from the cluster CA and a port on 127.0.0.1, and registers it with the
// aggregator through an ExternalName Service naming 127.0.0.1: there is
// no kube-proxy, EndpointSlices refuse loopback addresses, and the
// aggregator (without --enable-aggregator-routing) dials
// <externalName>:<APIService port> for such a Service. It scrapes
// every Node at https://<InternalIP>:<status.daemonEndpoints.kubeletEndpoint.port>/metrics/resource,
// verifying the kubelet's certificate against the cluster CA and
// presenting the identity of Config.Credential.
//
//	func TestTop(t *testing.T) {
//		cp := ... // controlplane.Start
//		bin, err := metricsserver.BinDir()
//		if err != nil {
//			t.Skip(err)
//		}
//		ms, err := metricsserver.Start(t.Context(), metricsserver.Config{
//			ControlPlane: cp,
//			BinDir:       bin,
//			Dir:          t.TempDir(),
//		})
//		if err != nil {
//			t.Fatal(err)
//		}
//		// Registered after the control plane's Cleanup, so it runs first.
//		t.Cleanup(func() { ms.Stop() })
//		// Usage appears about one MetricResolution after a Node's first scrape.
//		out, err := cp.Kubectl(t.Context(), "top", "node")
//		...
//	}
//
// Environment: VKF_METRICS_SERVER_BIN points BinDir at a directory
// holding metrics-server; VKF_NO_BUILD=1 makes it fail rather than build.
package metricsserver
