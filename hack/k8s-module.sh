# Sourced by hack/controlplane-build.sh and hack/conformance-build.sh: the
# wrapper module that builds programs of k8s.io/kubernetes from the Go module
# proxy. k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with
# ./staging/src/..., which only a module that replaces them with their
# published versions can build.

# k8s_source_dir VERSION prints where k8s.io/kubernetes@VERSION is in the
# module cache (downloading it first).
k8s_source_dir() {
  local modjson kdir
  modjson=$(go mod download -json "k8s.io/kubernetes@$1")
  kdir=$(printf '%s\n' "$modjson" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -n "$kdir" ] || { echo "cannot locate the source of k8s.io/kubernetes@$1" >&2; return 1; }
  echo "$kdir"
}

# k8s_wrapper_gomod MODULE KDIR STAGING_VERSION REQUIRE... prints the go.mod
# of wrapper module MODULE: it requires each REQUIRE ("path version") and
# replaces every staging module of the k8s.io/kubernetes source in KDIR with
# its published STAGING_VERSION.
k8s_wrapper_gomod() {
  local module=$1 kdir=$2 staging=$3
  shift 3
  echo "module $module"
  echo
  echo "go 1.26"
  echo
  if [ $# -eq 1 ]; then
    echo "require $1"
  else
    echo "require ("
    printf '\t%s\n' "$@"
    echo ")"
  fi
  echo
  grep -E '^[[:space:]]*k8s.io/[^ ]+ => \./staging/src/' "$kdir/go.mod" |
    awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
}
