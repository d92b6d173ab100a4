#!/usr/bin/env bash
# Benchmarks vk-fleet against the real local control plane and writes the
# results table into docs/benchmarks.md. Usage: hack/bench.sh [-n 100,1000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

vkf_install_packages
vkf_controlplane
vkf_build
exec go run -tags "$VKF_TAGS" ./hack/bench -out docs/benchmarks.md "$@"
