package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// localStatusFile, in the state directory, is what `device-agent status`
// reads: the agent's connection and its pods, as the agent last saw them.
const localStatusFile = "status.json"

// localStatusEvery bounds how often the agent rewrites the file when only
// timestamps changed (an SD card wears).
const localStatusEvery = time.Minute

// LocalStatus is the agent's own account of itself, kept on the device so
// that a person at the device can read it without the cluster or the link.
type LocalStatus struct {
	Device string `json:"device"`
	// Connected is whether the agent's NATS connection was up.
	Connected bool `json:"connected"`
	// LastContact is when the agent last sent a heartbeat on a live
	// connection.
	LastContact time.Time `json:"lastContact,omitzero"`
	// RuntimeError is set while podman cannot be reached.
	RuntimeError string `json:"runtimeError,omitempty"`
	// WrittenAt is when the agent wrote this.
	WrittenAt time.Time  `json:"writtenAt"`
	Pods      []LocalPod `json:"pods"`
	// AgentRunning is set by ReadLocalStatus: whether an agent holds the
	// state directory now (if not, the rest is what the last one saw).
	AgentRunning bool `json:"agentRunning"`
}

// LocalPod is one pod the device runs.
type LocalPod struct {
	Namespace  string                   `json:"namespace"`
	Name       string                   `json:"name"`
	UID        string                   `json:"uid"`
	Phase      string                   `json:"phase"`
	Containers []bridge.ContainerStatus `json:"containers,omitempty"`
}

// writeLocalStatus records the agent's state in the state directory when it
// changed, or a minute passed.
func (a *Agent) writeLocalStatus(connected bool, lastContact time.Time) {
	st := LocalStatus{Device: a.cfg.Device, Connected: connected, LastContact: lastContact}
	records := a.store.List()
	a.mu.Lock()
	st.RuntimeError = a.runtimeErr
	for _, r := range records {
		lp := LocalPod{Namespace: r.Workload.Namespace, Name: r.Workload.Name, UID: r.Workload.UID, Phase: "Pending"}
		if ps := a.published[r.Workload.UID]; ps != nil {
			lp.Phase = ps.Phase
			lp.Containers = append(append(lp.Containers, ps.InitContainers...), ps.Containers...)
		}
		st.Pods = append(st.Pods, lp)
	}
	a.mu.Unlock()
	sort.Slice(st.Pods, func(i, j int) bool {
		return st.Pods[i].Namespace+"/"+st.Pods[i].Name < st.Pods[j].Namespace+"/"+st.Pods[j].Name
	})
	key, _ := json.Marshal(struct {
		C bool
		R string
		P []LocalPod
	}{st.Connected, st.RuntimeError, st.Pods})
	if string(key) == a.localKey && time.Since(a.localAt) < localStatusEvery {
		return
	}
	st.WrittenAt = time.Now().UTC()
	data, err := json.MarshalIndent(&st, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(a.cfg.StateDir, localStatusFile), data)
	}
	if err != nil {
		a.log.Debug("writing the local status", "err", err)
		return
	}
	a.localKey, a.localAt = string(key), time.Now()
}

// ReadLocalStatus reads what the agent of stateDir last recorded, and
// whether an agent runs on it now.
func ReadLocalStatus(stateDir string) (*LocalStatus, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, localStatusFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no agent status in %s: has device-agent run with this --state-dir?", stateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the agent status: %w", err)
	}
	var st LocalStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("reading the agent status: %w", err)
	}
	st.AgentRunning = stateDirLocked(stateDir)
	return &st, nil
}

// stateDirLocked reports whether an agent holds dir's lock.
func stateDirLocked(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "agent.lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
