package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// replica is one vk-fleet process of the replica test.
type replica struct {
	id    string
	debug string
	proc  *devcluster.Process
}

func (r *replica) served() ([]string, error) {
	resp, err := http.Get("http://" + r.debug + "/debug/vars")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct {
		Served []string `json:"served_devices"`
	}
	return v.Served, json.NewDecoder(resp.Body).Decode(&v)
}

// Three replicas share twelve simulated devices: each device is served by
// exactly one, and when one replica is killed the others take over its
// devices without any Node going NotReady and without serving a device twice.
// It runs its own control plane, so that it cannot disturb the other tests.
func TestReplicasShareTheFleetAndSurviveAFailure(t *testing.T) {
	needCluster(t)
	const devices = 12
	dir := t.TempDir()
	bin, err := controlplane.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	// Kubernetes' own node-monitor grace period (50s): the handover has to
	// fit in it without any Node turning NotReady.
	cp, err := controlplane.Start(t.Context(), controlplane.Config{BinDir: bin, Dir: filepath.Join(dir, "cp")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := cp.ClientKubeconfig("vk-fleet", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	binDir := os.Getenv(devcluster.EnvBinDir)
	if binDir == "" {
		t.Fatalf("%s must be set (hack/test.sh sets it)", devcluster.EnvBinDir)
	}
	natsPort, _ := devcluster.FreePort()
	natsURL := "tls://127.0.0.1:" + strconv.Itoa(natsPort)

	// Service identities of the replicas that use r0's embedded NATS.
	seeds := map[string]string{}
	var serviceFlags []string
	for _, id := range []string{"r1", "r2"} {
		kp, _ := nkeys.CreateUser()
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		seeds[id] = filepath.Join(dir, id+".nk")
		if err := os.WriteFile(seeds[id], seed, 0o600); err != nil {
			t.Fatal(err)
		}
		serviceFlags = append(serviceFlags, "--service-nkey", id+"="+pub)
	}
	start := func(id string, extra ...string) *replica {
		port, _ := devcluster.FreePort()
		r := &replica{id: id, debug: "127.0.0.1:" + strconv.Itoa(port)}
		args := append([]string{"--kubeconfig", kubeconfig, "--replica-id", id, "--debug-listen", r.debug,
			"--node-address", "127.0.0.1", "--heartbeat-timeout", "8s", "--ping-interval", "2s", "--log-level", "debug",
			"--kubelet-listen", "off"}, extra...)
		r.proc, err = devcluster.StartProcess(id, filepath.Join(dir, id+".log"), nil, filepath.Join(binDir, "vk-fleet"), args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			r.proc.Stop(10 * time.Second)
			if t.Failed() {
				t.Logf("%s log tail:\n%s", id, r.proc.Tail(40))
			}
		})
		eventually(t, time.Minute, id+" debug endpoint", func(context.Context) (bool, string) {
			_, err := r.served()
			if r.proc.Exited() {
				t.Fatalf("%s exited:\n%s", id, r.proc.Tail(20))
			}
			return err == nil, fmt.Sprint(err)
		})
		return r
	}
	r0 := start("r0", append([]string{"--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort), "--nats-store-dir", filepath.Join(dir, "nats")}, serviceFlags...)...)
	caFile := filepath.Join(dir, "ca.crt")
	eventually(t, time.Minute, "the NATS CA", func(ctx context.Context) (bool, string) {
		cm, err := cs.CoreV1().ConfigMaps(registry.DefaultTokenNamespace).Get(ctx, registry.CAConfigMap, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return os.WriteFile(caFile, []byte(cm.Data["ca.crt"]), 0o644) == nil, ""
	})
	r1 := start("r1", "--nats-url", natsURL, "--nats-nkey-file", seeds["r1"], "--nats-ca-file", caFile)
	r2 := start("r2", "--nats-url", natsURL, "--nats-nkey-file", seeds["r2"], "--nats-ca-file", caFile)
	replicas := []*replica{r0, r1, r2}

	tok, err := registry.New(cs).CreateToken(t.Context(), registry.TokenOptions{TTL: time.Hour, Uses: devices})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := devcluster.StartProcess("simulate", filepath.Join(dir, "simulate.log"), nil, filepath.Join(binDir, "device-agent"),
		"simulate", "--count", strconv.Itoa(devices), "--prefix", "rep-", "--nats-url", natsURL, "--ca-file", caFile,
		"--token", tok.String(), "--label", "fleet=replicated", "--state-dir", filepath.Join(dir, "sim"), "--heartbeat-interval", "2s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Stop(10 * time.Second) })

	readyCount := func(ctx context.Context) (int, int) {
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "fleet=replicated"})
		if err != nil {
			return 0, 0
		}
		ready := 0
		for i := range l.Items {
			if nodeReady(&l.Items[i]) {
				ready++
			}
		}
		return ready, len(l.Items)
	}
	// owners maps each device to the replicas serving it, from two rounds
	// of samples: a device counts as served twice only if two replicas
	// report it in both rounds.
	owners := func(live []*replica) (map[string][]string, error) {
		var rounds [2]map[string]map[string]bool
		for i := range rounds {
			rounds[i] = map[string]map[string]bool{}
			for _, r := range live {
				served, err := r.served()
				if err != nil {
					return nil, fmt.Errorf("%s: %w", r.id, err)
				}
				for _, d := range served {
					if rounds[i][d] == nil {
						rounds[i][d] = map[string]bool{}
					}
					rounds[i][d][r.id] = true
				}
			}
		}
		out := map[string][]string{}
		for d, rs := range rounds[1] {
			for id := range rs {
				if rounds[0][d][id] {
					out[d] = append(out[d], id)
				}
			}
		}
		return out, nil
	}
	eventually(t, 2*time.Minute, "every device Ready and served by exactly one replica", func(ctx context.Context) (bool, string) {
		ready, total := readyCount(ctx)
		own, err := owners(replicas)
		if err != nil {
			return false, err.Error()
		}
		once, per := 0, map[string]int{}
		for _, rs := range own {
			if len(rs) > 1 {
				t.Fatalf("device served by %v at once", rs)
			}
			once++
			per[rs[0]]++
		}
		// Replicas joined one after another: wait until the later ones got
		// their share from the earlier ones.
		return ready == devices && once == devices && len(per) == len(replicas),
			fmt.Sprintf("%d/%d ready, %d served, per replica %v", ready, total, once, per)
	})
	served2, _ := r2.served()
	if len(served2) == 0 {
		t.Fatalf("r2 serves no device; the test needs it to serve some (owners spread badly)")
	}
	t.Logf("before the failure r2 serves %v", served2)

	// Kill r2 without warning; its claims expire and r0/r1 take over.
	r2.proc.Kill()
	killed := time.Now()
	live := []*replica{r0, r1}
	eventually(t, time.Minute, "r2's devices taken over", func(ctx context.Context) (bool, string) {
		ready, _ := readyCount(ctx)
		if ready != devices {
			t.Fatalf("%d of %d Nodes Ready during the handover: a device flapped NotReady", ready, devices)
		}
		own, err := owners(live)
		if err != nil {
			return false, err.Error()
		}
		for d, rs := range own {
			if len(rs) > 1 {
				t.Fatalf("device %s served by %v at once", d, rs)
			}
		}
		return len(own) == devices, fmt.Sprintf("%d served", len(own))
	})
	t.Logf("r2's devices served again %s after it was killed", time.Since(killed).Round(time.Millisecond))
	// Stay Ready for a while longer: Node leases must keep being renewed.
	deadline := time.Now().Add(25 * time.Second)
	eventually(t, time.Minute, "Nodes staying Ready after the handover", func(ctx context.Context) (bool, string) {
		ready, _ := readyCount(ctx)
		if ready != devices {
			t.Fatalf("%d of %d Nodes Ready after the handover", ready, devices)
		}
		return time.Now().After(deadline), ""
	})
}
