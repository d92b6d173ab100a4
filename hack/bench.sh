#!/usr/bin/env bash
# Benchmarks vk-fleet against the real local control plane and writes the
# results table into docs/benchmarks.md. Usage: hack/bench.sh [-n 100,1000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

# 10,000 simulated devices hold two files each in the simulator (a NATS
# connection, a state lock) and vk-fleet a connection each: more than the
# usual 20,000. Root may raise the limit; others get what they have.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -Sn 262144 2>/dev/null || true
vkf_install_packages
vkf_controlplane
vkf_build
exec go run -tags "$VKF_TAGS" ./hack/bench -out docs/benchmarks.md "$@"
