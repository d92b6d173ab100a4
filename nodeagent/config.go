package nodeagent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultConfigPath is where `fleetctl enroll` writes the agent's
// configuration and where device-agent looks for it.
const DefaultConfigPath = "/etc/vk-fleet/agent.json"

// FileConfig is the device agent's configuration file, written by
// `fleetctl enroll`. It holds paths, never secrets: the device key lives in
// its own 0600 file.
type FileConfig struct {
	Name      string `json:"name"`
	NATSURL   string `json:"natsURL"`
	CAFile    string `json:"caFile,omitempty"`
	NKeyFile  string `json:"nkeyFile,omitempty"`
	StateDir  string `json:"stateDir,omitempty"`
	PodmanURL string `json:"podmanURL,omitempty"`
	// Zitadel identity instead of an nkey.
	ZitadelIssuer    string `json:"zitadelIssuer,omitempty"`
	ZitadelKeyFile   string `json:"zitadelKeyFile,omitempty"`
	ZitadelProjectID string `json:"zitadelProjectID,omitempty"`
}

// LoadFileConfig reads path.
func LoadFileConfig(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading agent configuration: %w", err)
	}
	var c FileConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parsing agent configuration %s: %w", path, err)
	}
	return &c, nil
}

// Save writes c to path (0644; it holds no secrets).
func (c *FileConfig) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating configuration directory: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing agent configuration: %w", err)
	}
	return nil
}
