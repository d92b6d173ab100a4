//go:build remote

package podman

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// TestNoRunningPodWithoutIP lists the device's pods without pause while
// pods are created, as the agent's passes do, and fails on a listing that
// shows a running container in a pod without an IP.
func TestNoRunningPodWithoutIP(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	lists := 0
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ps, err := e.rt.ListPods(ctx)
				if err != nil {
					continue
				}
				mu.Lock()
				lists++
				for _, p := range ps {
					for _, c := range p.Containers {
						if c.State == nodeagent.ContainerRunning && p.PodIP == "" {
							bad = append(bad, fmt.Sprintf("%s: %s running, no pod IP", p.Name, c.Name))
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	// Rounds of pods created at once: the window is short.
	for round := range 4 {
		var cw sync.WaitGroup
		for i := range 4 {
			cw.Add(1)
			go func() {
				defer cw.Done()
				w := workload(fmt.Sprintf("ip-%d-%d", round, i), sh("main", e.image, "sleep 3600"))
				create(t, e.rt, w, "hash-1")
			}()
		}
		cw.Wait()
	}
	cancel()
	wg.Wait()
	t.Logf("%d listings", lists)
	if len(bad) > 0 {
		t.Errorf("%d listings showed a running pod without an IP, the first: %s", len(bad), bad[0])
	}
}
