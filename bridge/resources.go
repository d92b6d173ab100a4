package bridge

// ResourceAmounts are amounts of a device's resources (protocol 6). Zero
// means none (or, in Inventory.Reserved, "not set by the device").
type ResourceAmounts struct {
	CPUMilli              int64 `json:"cpuMilli,omitempty"`
	MemoryBytes           int64 `json:"memoryBytes,omitempty"`
	EphemeralStorageBytes int64 `json:"ephemeralStorageBytes,omitempty"`
}

// NodePressure is what a device observes against its hard eviction
// thresholds (protocol 6), with kubelet's semantics: a condition stays true
// for the device's pressure transition period after its last threshold was
// met.
type NodePressure struct {
	Memory bool `json:"memory,omitempty"`
	Disk   bool `json:"disk,omitempty"`
	PID    bool `json:"pid,omitempty"`
	// Signals names the thresholds met at the last observation, as kubelet
	// spells them ("memory.available", "nodefs.available",
	// "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree",
	// "pid.available").
	Signals []string `json:"signals,omitempty"`
}
