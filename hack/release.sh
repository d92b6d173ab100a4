#!/usr/bin/env bash
# Builds a vk-fleet device release into dist/: device-agent and fleetctl for
# linux/amd64, linux/arm64 and linux/arm (GOARM=7) with the podman build
# tags, CGO_ENABLED=0 and the version stamped, a vk-fleet-agent .deb per
# architecture, and SHA256SUMS.
#
# The .deb holds device-agent only: on a device /usr/bin/fleetctl is a link
# to it (device-agent started as fleetctl enrolls the device). The
# fleetctl-linux-<arch> binaries are the operators' full fleetctl (token
# create, devices, revoke, ca, and enroll too), for workstations.
#
#   hack/release.sh                 # every architecture (a few minutes)
#   hack/release.sh amd64 arm64     # some
#
# VKF_VERSION overrides the version (default: git describe, see vkf_version).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

version=$(vkf_version)
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 arm)
dist="$VKF_ROOT/dist"
rm -rf "$dist"
mkdir -p "$dist"
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

vkf_log "building the release packager"
go build -o "$dist/.release" ./hack/release

for arch in "${archs[@]}"; do
  goarm=""
  [ "$arch" = arm ] && goarm=7
  bin="$dist/linux-$arch"
  vkf_log "building device-agent and fleetctl $version for linux/$arch${goarm:+ (GOARM=$goarm)}"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOARM=$goarm nice go build -trimpath -tags "$VKF_TAGS" \
    -ldflags "$(vkf_ldflags "$version")" -o "$bin/" ./cmd/device-agent ./cmd/fleetctl
  "$dist/.release" --version "$version" --goarch "$arch" --bin-dir "$bin" --out "$dist" >/dev/null
  for b in device-agent fleetctl; do
    cp "$bin/$b" "$dist/${b}-linux-$arch"
  done
  vkf_log "linux/$arch: device-agent (all a device needs) $(du -h "$bin/device-agent" | cut -f1), operators' fleetctl $(du -h "$bin/fleetctl" | cut -f1)"
  rm -rf "$bin"
done
rm -f "$dist/.release"

(cd "$dist" && sha256sum -- * >SHA256SUMS)
vkf_log "release $version in $dist:"
ls -l "$dist" >&2
