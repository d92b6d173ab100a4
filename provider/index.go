package provider

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// indexInterval is how often the indexes are checked when nothing asks.
const indexInterval = 5 * time.Second

// kickIndexes asks for the devices' indexes to be checked soon.
func (p *Provider) kickIndexes() {
	select {
	case p.indexKick <- struct{}{}:
	default:
	}
}

// writeIndexes keeps each served device's DesiredIndex equal to the pods
// that Kubernetes binds to it, until ctx ends. pods must have synced: the
// index is what lets a device remove a pod it was not explicitly told to,
// so it is only ever written from a complete view of Kubernetes.
func (p *Provider) writeIndexes(ctx context.Context, pods corelisters.PodLister) {
	t := time.NewTicker(indexInterval)
	defer t.Stop()
	for {
		p.syncIndexes(ctx, pods)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.indexKick:
		}
	}
}

func (p *Provider) syncIndexes(ctx context.Context, pods corelisters.PodLister) {
	list, err := pods.List(labels.Everything())
	if err != nil {
		p.log.Warn("listing pods for the device indexes", "err", err)
		return
	}
	byDevice := map[string][]string{}
	for _, name := range p.deviceNames() {
		byDevice[name] = []string{}
	}
	for _, pod := range list {
		if pod.Spec.NodeName == "" {
			continue
		}
		byDevice[pod.Spec.NodeName] = append(byDevice[pod.Spec.NodeName], string(pod.UID))
	}
	for device, uids := range byDevice {
		if ctx.Err() != nil {
			return
		}
		if !p.cfg.Registry.Has(device) || !p.owns(device) {
			continue
		}
		slices.Sort(uids)
		// The protocol is part of what was written: an upgraded provider
		// rewrites every index once, and devices learn they may go quiet.
		enc := "v" + strconv.Itoa(bridge.ProtocolVersion) + ":" + strings.Join(uids, ",")
		p.mu.Lock()
		same := p.indexWritten[device] == enc
		p.mu.Unlock()
		if same {
			continue
		}
		data, err := bridge.Encode(&bridge.DesiredIndex{Device: device, PodUIDs: uids, WrittenAt: time.Now().UTC(), ProviderProtocol: bridge.ProtocolVersion})
		if err != nil {
			continue
		}
		if _, err := p.workloads.Put(ctx, bridge.IndexKey(device), data); err != nil {
			p.log.Warn("writing the device's index", "device", device, "err", err)
			continue
		}
		p.tellDevice(device, bridge.IndexKey(device))
		p.mu.Lock()
		p.indexWritten[device] = enc
		p.mu.Unlock()
	}
}

// tellDevice tells device that the provider changed key of its desired
// state (protocol 7): the device reads the key, instead of keeping a
// JetStream consumer on its keys. A lost message costs a delay, never a
// wrong state: the device reads all its keys after every reconnect and at
// its full-read interval.
func (p *Provider) tellDevice(device, key string) {

	if err := p.cfg.NATS.Publish(bridge.DesiredSubject(device), []byte(key)); err != nil {
		p.log.Debug("telling a device its desired state changed", "device", device, "key", key, "err", err)
	}
}
