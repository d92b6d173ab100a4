#!/usr/bin/env bash
# Runs the whole vk-fleet test suite: unit tests, integration tests with
# real NATS and podman, and e2e tests against a real control plane.
# Installs what it needs on a fresh Debian 12 machine (run as root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VKF_ROOT"

vkf_install_packages
vkf_controlplane
vkf_metrics_server
vkf_build

export VKF_REQUIRE_PODMAN=1 VKF_REQUIRE_CONTROLPLANE=1 VKF_REQUIRE_E2E=1 VKF_NO_BUILD=1

vkf_log "go.mod and go.sum are tidy, code is gofmt'ed"
go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy" >&2; exit 1; }
unformatted=$(gofmt -l $(git ls-files '*.go'))
[ -z "$unformatted" ] || { echo "not gofmt'ed: $unformatted" >&2; exit 1; }

vkf_log "go vet (with and without the podman build tags)"
go vet -tags "$VKF_TAGS" ./...
go vet ./...

vkf_log "cross-compiling device-agent for linux/arm64 and linux/arm"
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -tags "$VKF_TAGS" -o /dev/null ./cmd/device-agent
CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build -tags "$VKF_TAGS" -o /dev/null ./cmd/device-agent

vkf_log "fuzzing every decoder briefly (seed corpus in bridge/testdata/fuzz)"
# A count of inputs, not a duration: a timed run on a loaded machine can end
# in the engine's own "context deadline exceeded".
for target in $(go test -list '^Fuzz' ./bridge/ | grep '^Fuzz'); do
  for attempt in 1 2; do
    if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "${VKF_FUZZTIME:-50000x}" ./bridge/ 2>&1); then break; fi
    # Go's fuzzing engine sometimes ends a run with "context deadline
    # exceeded" and no failing input (golang/go#56238): run it once more.
    # A real failure names its input ("Failing input written to ...").
    if [ "$attempt" = 2 ] || grep -q "Failing input" <<<"$out" || ! grep -q "context deadline exceeded" <<<"$out"; then
      echo "$out" >&2; exit 1
    fi
    echo "fuzzing $target: the engine timed out without a failing input; once more" >&2
  done
done

vkf_log "tests"
# -p 1: the e2e and integration packages each start servers; two cores.
go test -tags "$VKF_TAGS" -p 1 -count=1 -timeout 45m "$@" ./...

vkf_log "node conformance: the fast subset of the upstream sig-node and sig-storage specs against device Nodes (the full set: hack/conformance.sh)"
bash hack/conformance.sh --fast
