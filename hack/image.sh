#!/usr/bin/env bash
# Builds the vk-fleet container image from the Containerfile, offline: the
# static binary is built here (CGO_ENABLED=0, version stamped) and copied
# into a FROM-scratch image with the host's CA certificates. No registry is
# contacted and no container runs.
#
#   hack/image.sh                    # tags localhost/vk-fleet:<version>
#   VKF_IMAGE=reg.example/vk-fleet:v1 hack/image.sh
#
# Environment: VKF_VERSION overrides the version (default: vkf_version);
# VKF_IMAGE_BINARY uses a prebuilt static vk-fleet instead of building one;
# CONTAINERS_CONF / CONTAINERS_STORAGE_CONF select podman's configuration
# and storage as for any podman command (the tests use their own).
# Prints the image reference on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

version=$(vkf_version)
image=${VKF_IMAGE:-localhost/vk-fleet:${version}}
command -v podman >/dev/null || { echo "podman is required (apt-get install podman)" >&2; exit 1; }
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "$certs is missing (apt-get install ca-certificates)" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
if [ -n "${VKF_IMAGE_BINARY:-}" ]; then
  cp "$VKF_IMAGE_BINARY" "$context/vk-fleet"
else
  vkf_log "building a static vk-fleet $version"
  CGO_ENABLED=0 nice go build -trimpath -tags "$VKF_TAGS" -ldflags "$(vkf_ldflags "$version")" \
    -o "$context/vk-fleet" ./cmd/vk-fleet
fi
cp "$certs" "$context/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$context/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$context/group"
mkdir "$context/tmp"

vkf_log "building image $image"
podman build --quiet --pull=never --network=none -f Containerfile --build-arg "VERSION=$version" \
  -t "$image" "$context" >&2
echo "$image"
