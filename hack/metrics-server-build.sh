#!/usr/bin/env bash
# Builds (once) and caches metrics-server from the Go module proxy, for
# tests that run `kubectl top` against the local control plane
# (test/framework/metricsserver).
# Prints the bin directory on stdout. Rebuilds only when the binary is missing.
set -euo pipefail

METRICS_SERVER_VERSION=${METRICS_SERVER_VERSION:-v0.8.0}
CACHE=${VKF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-fleet}
BIN=$CACHE/metrics-server-$METRICS_SERVER_VERSION/bin

log() { echo "metrics-server-build: $*" >&2; }

if [ -x "$BIN/metrics-server" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"

export GOFLAGS=-mod=mod
export CGO_ENABLED=0

log "building metrics-server $METRICS_SERVER_VERSION (about a minute on 2 cores)"
d=$CACHE/src/metrics-server-$METRICS_SERVER_VERSION
mkdir -p "$d"
cd "$d"
# metrics-server's go.mod has no replace directives, so requiring it from a
# scratch module builds it with exactly its own dependency versions.
cat > go.mod <<M
module vkfleet.local/metricsserverbuild

go 1.26

require sigs.k8s.io/metrics-server $METRICS_SERVER_VERSION
M
cat > tools.go <<T
//go:build tools

package tools

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"
T
go mod tidy >&2
# As metrics-server's Makefile: the version lives in client-go's version
# package (metrics-server --version prints it).
ld="-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
nice go build -trimpath -ldflags "$ld" -o "$BIN/metrics-server.tmp" sigs.k8s.io/metrics-server/cmd/metrics-server >&2
mv "$BIN/metrics-server.tmp" "$BIN/metrics-server"
echo "$BIN"
