#!/usr/bin/env bash
# Builds the pinned upstream Kubernetes and etcd binaries from their Go modules into a cache
# folder outside the repository. A binary whose stamp matches the pinned version and module
# checksums is not rebuilt, so a warm run returns in seconds.
#
#   hack/testbin/build.sh            # prints the bin folder on its last line
#   STOCKADE_TESTBIN=/some/dir hack/testbin/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${STOCKADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stockade}
bin_dir=${STOCKADE_TESTBIN:-$cache_root/k8s-${KUBERNETES_VERSION}/bin}
mkdir -p "$bin_dir"

command -v go >/dev/null || { echo "error: go is not installed (needed to build the test binaries)" >&2; exit 1; }

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
# The release time of the tag (from the module proxy's .info) makes the build date reproducible.
build_date=$(cd "$here/kubernetes" && go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
  | python3 -c 'import json,sys; print(json.load(open(json.load(sys.stdin)["Info"]))["Time"])')
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X $pkg.gitVersion=${KUBERNETES_VERSION}"
  version_ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=${k8s_minor}"
  version_ldflags+=" -X $pkg.gitCommit=${KUBERNETES_GIT_COMMIT:-module-${KUBERNETES_VERSION}}"
  version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${build_date}"
done

started=$(date +%s)
total=8
n=0

# build NAME MODULE_DIR PACKAGE CGO LDFLAGS
build() {
  local name=$1 module_dir=$2 package=$3 cgo=$4 ldflags=$5
  n=$((n + 1))
  local stamp_file="$bin_dir/.$name.stamp"
  local stamp
  stamp="$( (cat "$module_dir/go.mod" "$module_dir/go.sum"; echo "$cgo $ldflags") | sha256sum | cut -c1-16)"
  if [ -x "$bin_dir/$name" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    echo "[$n/$total] $name: up to date"
    return
  fi
  echo "[$n/$total] $name: building $package (CGO_ENABLED=$cgo) …"
  local t0; t0=$(date +%s)
  # A cold build takes minutes per binary; a heartbeat shows it is still moving.
  ( while sleep 30; do echo "      … $name still building, $(( $(date +%s) - t0 ))s"; done ) &
  local ticker=$!
  local rc=0
  (cd "$module_dir" && CGO_ENABLED=$cgo go build -mod=readonly -trimpath \
      -ldflags "-s -w $ldflags" -o "$bin_dir/$name.partial" "$package") || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "error: building $name failed (exit $rc)" >&2
    exit "$rc"
  fi
  mv "$bin_dir/$name.partial" "$bin_dir/$name"
  echo "$stamp" > "$stamp_file"
  echo "      $name built in $(( $(date +%s) - t0 ))s"
}

k8s="$here/kubernetes"
# Upstream links these statically; the kubelet is the one server binary it builds with cgo.
build kube-apiserver "$k8s" k8s.io/kubernetes/cmd/kube-apiserver 0 "$version_ldflags"
build kube-controller-manager "$k8s" k8s.io/kubernetes/cmd/kube-controller-manager 0 "$version_ldflags"
build kube-scheduler "$k8s" k8s.io/kubernetes/cmd/kube-scheduler 0 "$version_ldflags"
build kubectl "$k8s" k8s.io/kubernetes/cmd/kubectl 0 "$version_ldflags"
build kube-proxy "$k8s" k8s.io/kubernetes/cmd/kube-proxy 0 "$version_ldflags"
build kubelet "$k8s" k8s.io/kubernetes/cmd/kubelet 1 "$version_ldflags"
etcd_ldflags="-X go.etcd.io/etcd/api/v3/version.GitSHA=module-${ETCD_VERSION}"
build etcd "$here/etcd" go.etcd.io/etcd/server/v3 0 "$etcd_ldflags"
build etcdctl "$here/etcd" go.etcd.io/etcd/etcdctl/v3 0 "$etcd_ldflags"

echo "test binaries ready in $(( $(date +%s) - started ))s: Kubernetes ${KUBERNETES_VERSION}, etcd ${ETCD_VERSION}"
echo "$bin_dir"
