#!/usr/bin/env bash
# Runs the upstream Kubernetes conformance specs of sig-node and sig-storage
# (those that are neither [Serial] nor [Disruptive]) against device Nodes:
# a local control plane, vk-fleet and two device-agents on podman
# (test/framework/devcluster), with the test images built locally.
#
#   hack/conformance.sh            the full set; writes docs/conformance.md
#   hack/conformance.sh --fast     the subset in hack/conformance/fast.txt (CI)
#
# Options:
#   --procs N          parallel ginkgo processes (default 6; the specs mostly wait)
#   --devices N        device Nodes (default 3)
#   --with-excluded    also run the specs of hack/conformance/exclusions.txt
#   --focus REGEX      run only the specs of the set matching REGEX (debugging)
#   --dir DIR          state, logs and reports there (default: a new /tmp/vkf-conf-*)
#
# The first run builds e2e.test, ginkgo, agnhost and nnp from the Go module proxy
# at the control plane's version (hack/conformance-build.sh, about 8 minutes
# on 2 cores, cached in ~/.cache/vk-fleet). Exits non-zero when a spec fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

export K8S_VERSION=${K8S_VERSION:-v1.37.2} STAGING_VERSION=${STAGING_VERSION:-v0.37.2}
FOCUS='\[sig-node\].*\[Conformance\]|\[sig-storage\].*\[Conformance\]'
SKIP='\[Serial\]|\[Disruptive\]'
EXCLUSIONS=hack/conformance/exclusions.txt
FAST_LIST=hack/conformance/fast.txt
# hack/conformance/failures.md: the diagnosis of the failures, by cause,
# kept by hand and put into docs/conformance.md.

fast=0 procs=6 devices=3 with_excluded=0 dir="" extra_focus=""
while [ $# -gt 0 ]; do
  case $1 in
    --fast) fast=1 ;;
    --procs) procs=$2; shift ;;
    --devices) devices=$2; shift ;;
    --with-excluded) with_excluded=1 ;;
    --focus) extra_focus=$2; shift ;;
    --dir) dir=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# regex_of prints the lines of a spec list (the spec text up to " | ",
# without comments) as one alternation of literal, anchored-free regexes.
regex_of() {
  grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$1" |
    sed -e 's/ | .*$//' -e 's/[][\\.*^$(){}?+|]/\\&/g' |
    paste -sd '|' -
}

vkf_install_packages
# The test images' /bin/sh (hack/conformance/images.go says why).
if [ ! -x /bin/bash-static ]; then
  vkf_log "installing bash-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bash-static >/dev/null
fi
vkf_controlplane
vkf_build
vkf_log "e2e.test, ginkgo, agnhost and nnp (built once from the Go module proxy, then cached)"
CONF_BIN=$("$VKF_ROOT/hack/conformance-build.sh")

[ -n "$dir" ] || dir=$(mktemp -d /tmp/vkf-conf-XXXX)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
go build -o "$dir/conformance" ./hack/conformance

"$CONF_BIN/e2e.test" --list-conformance-tests > "$dir/conformance.yaml"

run_focus=$FOCUS run_skip=$SKIP
if [ $fast = 1 ]; then
  run_focus=$(regex_of "$FAST_LIST")
fi
[ -z "$extra_focus" ] || run_focus="($run_focus).*($extra_focus)|($extra_focus).*($run_focus)"
if [ $with_excluded = 0 ] && [ -n "$(regex_of "$EXCLUSIONS")" ]; then
  run_skip="$run_skip|$(regex_of "$EXCLUSIONS")"
fi

timeout=3h
[ $fast = 0 ] || timeout=20m
vkf_log "running the conformance specs ($([ $fast = 1 ] && echo fast subset || echo full set), $procs processes); logs in $dir"
start=$(date +%s)
rc=0
"$dir/conformance" run -dir "$dir/cluster" -bin "$CONF_BIN" \
  -devices "$(seq -f 'conf-%g' -s, 1 "$devices")" -- \
  "$CONF_BIN/ginkgo" run --procs="$procs" --timeout="$timeout" \
    --focus="$run_focus" --skip="$run_skip" \
    --junit-report=junit.xml --output-dir="$dir" --no-color --silence-skips \
    "$CONF_BIN/e2e.test" -- \
    --provider=skeleton \
    --kubectl-path="$VKF_CONTROLPLANE_BIN/kubectl" \
    --report-dir="$dir/e2e" \
    --disable-log-dump \
  > "$dir/ginkgo.log" 2>&1 || rc=$?
took=$(( $(date +%s) - start ))
vkf_log "specs ran in $((took / 60))m$((took % 60))s (exit $rc); ginkgo output in $dir/ginkgo.log"
[ -f "$dir/junit.xml" ] || { echo "no JUnit report in $dir; see $dir/ginkgo.log" >&2; tail -50 "$dir/ginkgo.log" >&2; exit 1; }

out=docs/conformance.md title="Conformance of device Nodes" only_run=false notes=hack/conformance/failures.md
if [ $fast = 1 ] || [ -n "$extra_focus" ]; then
  out=$dir/conformance.md title="Conformance of device Nodes (subset)" only_run=true notes=
fi
header="The \`[Conformance]\` specs of sig-node and sig-storage in k8s.io/kubernetes $K8S_VERSION \`test/e2e\` that are neither \`[Serial]\` nor \`[Disruptive]\`, run unchanged by
\`hack/conformance.sh\` (vk-fleet $(vkf_version)) against $devices device Nodes (vk-fleet, device-agents on podman
$(podman --version | awk '{print $3}')) with $procs parallel ginkgo processes in ${took}s.
The device Nodes are created as always, then the conformance cluster removes their
\`virtual-kubelet.io/provider=vk-fleet:NoSchedule\` taint (the specs set no tolerations).
No registry is reachable where it runs: the test images are built locally under the
names \`e2e.test --list-images\` prints (\`hack/conformance/images.go\` says what stands in for each)."
"$dir/conformance" report -conformance "$dir/conformance.yaml" -focus "$FOCUS" -skip "$SKIP" \
  -junit "$dir/junit.xml" -exclusions "$EXCLUSIONS" ${notes:+-notes "$notes"} -out "$out" -title "$title" -header "$header" -only-run=$only_run
vkf_log "report: $out"
exit $rc
