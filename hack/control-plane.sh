#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries that envtest (etcd, kube-apiserver) and
# the local cluster (also kube-controller-manager, kube-scheduler) run, from source
# through the Go module proxy: no release download works on our machines.
#
# The binaries are cached outside the checkout, keyed by version, so a clean clone and a
# second `make test` reuse them. Prints the directory that holds them (the value for
# KUBEBUILDER_ASSETS) on stdout; progress goes to stderr.
#
#   hack/control-plane.sh [component...]     default: etcd kube-apiserver
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.7.0}
CACHE=${KUBEOAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeoauth}
OUT="$CACHE/control-plane/k8s-v${K8S_VERSION}-etcd-v${ETCD_VERSION}"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kube-apiserver)

missing=()
for c in "${components[@]}"; do
  case "$c" in
    etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) ;;
    *) echo "control-plane.sh: unknown component '$c'" >&2; exit 2 ;;
  esac
  [ -x "$OUT/$c" ] || missing+=("$c")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$OUT"
# Two `make test` runs at once must not build the same binary twice or see half a file.
exec 9>"$OUT/.lock"
flock 9

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0

build_etcd() {
  echo ">> building etcd v${ETCD_VERSION} (about 30 s the first time)" >&2
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  go mod init kubeoauth.local/etcd-build >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2
  go build -trimpath -o "$work/etcd.bin" go.etcd.io/etcd/server/v3
  mv "$work/etcd.bin" "$OUT/etcd"
}

k8s_module_ready=
k8s_module() {
  [ -z "$k8s_module_ready" ] || return 0
  mkdir -p "$work/k8s"
  cd "$work/k8s"
  local staging_version="v0.${K8S_VERSION#1.}"
  go mod init kubeoauth.local/k8s-build >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  # k8s.io/kubernetes replaces each staging module with a local path; a module that
  # requires it must replace them with the published versions instead.
  {
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    sed -n 's#^\s*\(k8s.io/[a-z0-9./-]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } >>go.mod
  k8s_module_ready=1
}

build_k8s() {
  local c=$1
  echo ">> building $c v${K8S_VERSION} (4-6 minutes the first time)" >&2
  k8s_module
  cd "$work/k8s"
  go build -trimpath -o "$work/$c.bin" "k8s.io/kubernetes/cmd/$c"
  mv "$work/$c.bin" "$OUT/$c"
}

for c in "${missing[@]}"; do
  [ -x "$OUT/$c" ] && continue # built by a concurrent run while we waited for the lock
  case "$c" in
    etcd) build_etcd ;;
    *) build_k8s "$c" ;;
  esac
done
echo "$OUT"
