# Shared by hack/demo.sh and hack/test.sh: installs what vk-fleet needs on a
# fresh Debian 12 machine (as root) and builds the cached control plane.
# shellcheck shell=bash

VKF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VKF_TAGS="remote containers_image_openpgp exclude_graphdriver_btrfs"

vkf_log() { echo "==> $*" >&2; }

# vkf_install_packages installs podman and friends from Debian if missing.
vkf_install_packages() {
  local need=()
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  [ -x /bin/busybox ] || need+=(busybox-static)
  [ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null || need+=(catatonit)
  command -v git >/dev/null || need+=(git)
  # The image and package tests: CA certificates for the image, dpkg-deb to
  # inspect the .deb, systemd-analyze to verify its unit.
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  command -v dpkg-deb >/dev/null || need+=(dpkg)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "missing packages: ${need[*]}; run as root or install them" >&2
      return 1
    fi
    vkf_log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  command -v go >/dev/null || { echo "go 1.26 is required on PATH (/usr/local/go/bin)" >&2; return 1; }
}

# vkf_controlplane builds (once) and exports the control-plane binaries.
vkf_controlplane() {
  vkf_log "control plane binaries (built once from the Go module proxy, then cached)"
  VKF_CONTROLPLANE_BIN=$("$VKF_ROOT/hack/controlplane-build.sh")
  export VKF_CONTROLPLANE_BIN
}

# vkf_metrics_server builds (once) and exports metrics-server, which e2e
# tests run for `kubectl top` (test/framework/metricsserver).
vkf_metrics_server() {
  vkf_log "metrics-server binary (built once from the Go module proxy, then cached)"
  VKF_METRICS_SERVER_BIN=$("$VKF_ROOT/hack/metrics-server-build.sh")
  export VKF_METRICS_SERVER_BIN
}

# vkf_build builds vk-fleet, device-agent and fleetctl into $VKF_ROOT/bin,
# static (CGO_ENABLED=0) as releases are, so that the image and package
# tests can use them as they are.
vkf_build() {
  vkf_log "building vk-fleet and device-agent"
  (cd "$VKF_ROOT" && CGO_ENABLED=0 go build -tags "$VKF_TAGS" -o bin/ ./cmd/vk-fleet ./cmd/device-agent ./cmd/fleetctl)
  export VKF_BIN_DIR="$VKF_ROOT/bin"
}

# vkf_version prints the version that release builds are stamped with:
# $VKF_VERSION if set, else `git describe` from a v* tag, else the default
# of internal/version with the commit (v0.1.0-dev-0-gabc1234), "-dirty"
# when the tree has uncommitted changes.
vkf_version() {
  if [ -n "${VKF_VERSION:-}" ]; then
    echo "$VKF_VERSION"
    return
  fi
  if git -C "$VKF_ROOT" describe --tags --match 'v[0-9]*' --dirty 2>/dev/null; then
    return
  fi
  local base sha dirty=""
  base=$(sed -n 's/^var Version = "\(.*\)"$/\1/p' "$VKF_ROOT/internal/version/version.go")
  sha=$(git -C "$VKF_ROOT" rev-parse --short=7 HEAD 2>/dev/null || echo 0000000)
  git -C "$VKF_ROOT" diff --quiet HEAD 2>/dev/null || dirty=-dirty
  echo "${base}-0-g${sha}${dirty}"
}

# vkf_ldflags prints the -ldflags of a release build of version $1.
vkf_ldflags() {
  echo "-s -w -X github.com/vk-fleet/vk-fleet/internal/version.Version=$1"
}
