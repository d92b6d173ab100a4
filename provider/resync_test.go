package provider

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/natsd"
)

// An external NATS that comes back without its store gets every workload
// again: the provider's memory of what it published does not stand in for
// the bucket.
func TestANewBucketIsRepublished(t *testing.T) {
	p, nc := natsProvider(t)
	pod := basePod()
	if err := p.syncPod(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	key := bridge.PodKey(pod.Spec.NodeName, string(pod.UID))
	if _, err := p.workloads.Get(t.Context(), key); err != nil {
		t.Fatalf("workload not published: %v", err)
	}

	// A reconnect with the same bucket re-publishes nothing...
	p.resync(t.Context())
	// ...one to a new, empty bucket re-publishes everything.
	js, _ := jetstream.New(nc)
	if err := js.DeleteKeyValue(t.Context(), bridge.WorkloadsBucket); err != nil {
		t.Fatal(err)
	}
	p.resync(t.Context())
	if _, err := p.workloads.Get(t.Context(), key); err != nil {
		t.Fatalf("workload not re-published into the new bucket: %v", err)
	}
}

// natsProvider returns a Provider on a fake API server and a real embedded
// nats-server, its buckets open, and its NATS connection.
func natsProvider(t *testing.T) (*Provider, *nats.Conn) {
	t.Helper()
	nc := startNATS(t)
	p, err := New(Config{Client: fake.NewClientset(), NATS: nc, Registry: everyDevice{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.openBuckets(t.Context()); err != nil {
		t.Fatal(err)
	}
	return p, nc
}

// startNATS starts an embedded nats-server for t and connects to it.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := natsd.Start(t.Context(), natsd.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
