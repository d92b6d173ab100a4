package agentinstall

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// VersionArgs are the arguments after which device-agent prints its Info as
// JSON.
var VersionArgs = []string{"version", "--json"}

// Info is what `device-agent version --json` prints about its build.
type Info struct {
	Version string `json:"version"`
	// Podman reports whether the binary was built with the podman build
	// tags, without which it cannot run pods.
	Podman bool   `json:"podman"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
}

// checkTimeout bounds how long Check waits for the binary to answer.
const checkTimeout = 10 * time.Second

// Check runs the device-agent at binary and returns its Info. It fails when
// the binary is missing, cannot run on this machine (another architecture),
// does not answer `version --json` (too old), or cannot run pods
// (ErrNoPodman): a unit for such a binary could never start a pod.
func Check(ctx context.Context, binary string) (Info, error) {
	if _, err := os.Stat(binary); err != nil {
		return Info{}, fmt.Errorf("device-agent: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, VersionArgs...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Info{}, fmt.Errorf("running %s version: %w: %s", binary, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var info Info
	if err := json.Unmarshal(out, &info); err != nil {
		return Info{}, fmt.Errorf("reading the answer of %s version: %w", binary, err)
	}
	if !info.Podman {
		return info, fmt.Errorf("%s (%s): %w; build it with -tags 'remote containers_image_openpgp exclude_graphdriver_btrfs', or install the vk-fleet-agent package",
			binary, info.Version, ErrNoPodman)
	}
	return info, nil
}
