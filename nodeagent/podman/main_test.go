//go:build remote

package podman

import (
	"os"
	"testing"

	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

func TestMain(m *testing.M) { os.Exit(podmantest.Main(m)) }
