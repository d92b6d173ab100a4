#!/usr/bin/env bash
# Builds (once) and caches a real Kubernetes control plane and etcd from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd.
# Prints the bin directory on stdout. Rebuilds only what is missing.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${VKF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-fleet}
BIN=$CACHE/controlplane-$K8S_VERSION-etcd-$ETCD_VERSION/bin

log() { echo "controlplane-build: $*" >&2; }
# shellcheck source=hack/k8s-module.sh
source "$(dirname "$0")/k8s-module.sh"

need=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd; do
  [ -x "$BIN/$b" ] || need+=("$b")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"

export GOFLAGS=-mod=mod
export CGO_ENABLED=0

if [ ! -x "$BIN/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  d=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$d"
  cd "$d"
  [ -f go.mod ] || go mod init vkfleet.local/etcdbuild >/dev/null 2>&1
  cat > tools.go <<T
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
T
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 >&2
  mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

k8s_missing=0
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$BIN/$b" ] || k8s_missing=1
done
if [ $k8s_missing = 1 ]; then
  log "building kubernetes $K8S_VERSION (about 5 minutes on 2 cores)"
  d=$CACHE/src/k8s-$K8S_VERSION
  mkdir -p "$d"
  cd "$d"
  [ -f go.mod ] || go mod init vkfleet.local/k8sbuild >/dev/null 2>&1
  kdir=$(k8s_source_dir "$K8S_VERSION")
  k8s_wrapper_gomod vkfleet.local/k8sbuild "$kdir" "$STAGING_VERSION" "k8s.io/kubernetes $K8S_VERSION" > go.mod
  cat > tools.go <<T
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubectl/pkg/cmd"
)
T
  # kubectl's main lives in k8s.io/kubernetes/cmd/kubectl.
  go mod tidy >&2 || true
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
  go build -ldflags "$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl >&2
fi
echo "$BIN"
