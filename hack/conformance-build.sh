#!/usr/bin/env bash
# Builds (once) and caches what hack/conformance.sh runs, from the Go module
# proxy, at the control plane's Kubernetes version: e2e.test (the upstream
# end-to-end suite, k8s.io/kubernetes/test/e2e), the ginkgo CLI at the version
# Kubernetes pins (parallel runs), and, static, the programs of two test images:
# agnhost (k8s.io/kubernetes/test/images/agnhost) and nnp
# (k8s.io/kubernetes/test/images/nonewprivs).
# Prints the bin directory on stdout. Rebuilds only what is missing.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.37.2}
CACHE=${VKF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-fleet}
BIN=$CACHE/conformance-$K8S_VERSION/bin

log() { echo "conformance-build: $*" >&2; }
# shellcheck source=hack/k8s-module.sh
source "$(dirname "$0")/k8s-module.sh"

need=0
for b in e2e.test ginkgo agnhost nnp; do
  [ -x "$BIN/$b" ] || need=1
done
if [ $need = 0 ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"

export GOFLAGS=-mod=mod
export CGO_ENABLED=0

# A wrapper module (hack/k8s-module.sh), as the control plane's.
d=$CACHE/src/e2e-$K8S_VERSION
mkdir -p "$d"
cd "$d"
kdir=$(k8s_source_dir "$K8S_VERSION")
ginkgo_version=$(awk '$1 == "github.com/onsi/ginkgo/v2" {print $2; exit}' "$kdir/go.mod")
[ -n "$ginkgo_version" ] || { log "cannot read the ginkgo version from k8s.io/kubernetes's go.mod"; exit 1; }
if [ ! -f go.mod ]; then
  k8s_wrapper_gomod vkfleet.local/e2ebuild "$kdir" "$STAGING_VERSION" \
    "k8s.io/kubernetes $K8S_VERSION" "github.com/onsi/ginkgo/v2 $ginkgo_version" > go.mod
  cat > tools.go <<T
//go:build tools

package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
T
  go mod tidy >&2 || true
fi

if [ ! -x "$BIN/ginkgo" ]; then
  log "building ginkgo $ginkgo_version"
  go build -o "$BIN/ginkgo" github.com/onsi/ginkgo/v2/ginkgo >&2
fi
if [ ! -x "$BIN/agnhost" ]; then
  log "building agnhost (static)"
  go build -ldflags "-s -w" -o "$BIN/agnhost" k8s.io/kubernetes/test/images/agnhost >&2
fi
if [ ! -x "$BIN/nnp" ]; then
  log "building nnp (static)"
  go build -ldflags "-s -w" -o "$BIN/nnp" k8s.io/kubernetes/test/images/nonewprivs >&2
fi
if [ ! -x "$BIN/e2e.test" ]; then
  log "building e2e.test $K8S_VERSION (about 6 minutes on 2 cores)"
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
  go test -c -ldflags "$ld" -o "$BIN/e2e.test.tmp" k8s.io/kubernetes/test/e2e >&2
  mv "$BIN/e2e.test.tmp" "$BIN/e2e.test"
fi
echo "$BIN"
