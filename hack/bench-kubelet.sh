#!/usr/bin/env bash
# Benchmarks the kubelet API over the whole path (client → kube-apiserver →
# vk-fleet → NATS → device agent → podman) next to the same operations run
# directly against podman, and prints the table with the ratios.
# Usage: hack/bench-kubelet.sh [-benchtime 5x]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

vkf_install_packages
vkf_controlplane
vkf_build

benchtime=5x
if [ "${1:-}" = "-benchtime" ]; then benchtime=$2; fi
out=$(go test -tags "$VKF_TAGS" -count=1 -timeout 30m -run '^$' -bench '^BenchmarkKubelet' -benchtime "$benchtime" ./test/e2e/ 2>&1 | grep -E '^Benchmark|^(ok|FAIL|---)' ) || { echo "$out" >&2; exit 1; }
echo "$out" | awk '
/^BenchmarkKubelet/ {
  split($1, p, "/"); op = p[1]; sub(/^BenchmarkKubelet/, "", op); sub(/-[0-9]+$/, "", p[2]); side = p[2]
  v = ""; unit = ""
  for (i = 3; i <= NF; i++) {
    if ($(i) == "ms/first-byte") { v = $(i-1); unit = "ms to first byte" }
    if ($(i) == "MB/s") { v = $(i-1); unit = "MB/s" }
  }
  val[op, side] = v; units[op] = unit; if (!(op in seen)) { seen[op] = 1; order[++n] = op }
}
END {
  print "| operation | vk-fleet | podman alone | ratio | unit |"
  print "|---|---:|---:|---:|---|"
  for (i = 1; i <= n; i++) {
    op = order[i]; a = val[op, "vk-fleet"]; b = val[op, "podman"]
    r = (b + 0 > 0) ? sprintf("%.2f", a / b) : "-"
    printf "| %s | %s | %s | %s | %s |\n", op, a, b, r, units[op]
  }
}'
