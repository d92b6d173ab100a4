//go:build remote

package podman

import (
	"strings"
	"testing"
)

// A subPath that is absolute or has ".." anywhere is refused with
// kubelet's message, before anything is made in the volume; the device
// reports it as the container's CreateContainerConfigError.
func TestSubPathOutsideTheVolumeIsRefused(t *testing.T) {
	src := volumeSource{path: t.TempDir()}
	for sub, want := range map[string]string{
		"/tmp":   "error SubPath `/tmp` must not be an absolute path",
		"..":     "unable to provision SubPath `..`: must not contain '..'",
		"../x":   "unable to provision SubPath `../x`: must not contain '..'",
		"a/../b": "unable to provision SubPath `a/../b`: must not contain '..'",
	} {
		if _, err := src.mountSource("main", 0, sub); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("subPath %q: error %v, want %q", sub, err, want)
		}
	}
	if got, err := src.mountSource("main", 0, "a/./b"); err != nil || !strings.HasSuffix(got, "/a/b") {
		t.Errorf("subPath a/./b: %q, %v", got, err)
	}
}
