#!/usr/bin/env bash
# The vk-fleet demo: a local control plane, vk-fleet, two device-agents on
# podman, and a DaemonSet from examples/ that runs on one of them.
# Installs what it needs on a fresh Debian 12 machine (run as root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

vkf_install_packages
vkf_controlplane
vkf_build
exec go run -tags "$VKF_TAGS" ./hack/demo "$@"
