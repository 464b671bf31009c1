#!/usr/bin/env bash
# Builds the pinned upstream binaries from their Go modules into a cache folder outside the
# repository: Kubernetes and etcd (test bed and local super cluster), the previous minor's
# control-plane binaries (images for the upgrade test), gVisor's runsc with its containerd
# shim (the local sandbox runtime), CoreDNS, kube-router, distribution's OCI registry, kstatus
# (cli-utils' status library as a command) and metrics-server. A binary whose stamp matches the
# pinned version and module checksums is not rebuilt, so a warm run returns in seconds.
#
#   hack/testbin/build.sh            # prints the current version's bin folder on its last line
#   hack/testbin/build.sh conformance  # the conformance suite instead: e2e.test, ginkgo, agnhost
#   STOCKADE_TESTBIN=/some/dir hack/testbin/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${STOCKADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stockade}
bin_dir=${STOCKADE_TESTBIN:-$cache_root/k8s-${KUBERNETES_VERSION}/bin}
previous_bin_dir=$cache_root/k8s-${PREVIOUS_KUBERNETES_VERSION}/bin
mkdir -p "$bin_dir" "$previous_bin_dir"

command -v go >/dev/null || { echo "error: go is not installed (needed to build the test binaries)" >&2; exit 1; }

# kubernetes_ldflags MODULE_DIR VERSION: what upstream's build stamps into the version packages.
kubernetes_ldflags() {
  local module_dir=$1 version=$2 minor
  minor=${version#v1.}; minor=${minor%%.*}
  # The release time of the tag (from the module proxy's .info) makes the build date reproducible.
  local build_date
  build_date=$(cd "$module_dir" && go mod download -json "k8s.io/kubernetes@${version}" \
    | python3 -c 'import json,sys; print(json.load(open(json.load(sys.stdin)["Info"]))["Time"])')
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf ' -X %s' "$pkg.gitVersion=${version}" "$pkg.gitMajor=1" "$pkg.gitMinor=${minor}" \
      "$pkg.gitCommit=module-${version}" "$pkg.gitTreeState=clean" "$pkg.buildDate=${build_date}"
  done
}

started=$(date +%s)
total=19
n=0

# build OUT_DIR NAME MODULE_DIR PACKAGE CGO LDFLAGS [MOD_MODE]: a command; a NAME ending in .test
# is the test binary of PACKAGE (`go test -c`).
build() {
  local out_dir=$1 name=$2 module_dir=$3 package=$4 cgo=$5 ldflags=$6 mod_mode=${7:-readonly}
  n=$((n + 1))
  local stamp_file="$out_dir/.$name.stamp"
  local stamp
  stamp="$( (cat "$module_dir/go.mod" "$module_dir/go.sum"; echo "$cgo $ldflags $mod_mode"
    [ "$mod_mode" != vendor ] || cat "$module_dir/vendor/modules.txt" "$module_dir/PATCHED") | sha256sum | cut -c1-16)"
  if [ -x "$out_dir/$name" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    echo "[$n/$total] $name ($(basename "$(dirname "$out_dir")")): up to date"
    return
  fi
  echo "[$n/$total] $name: building $package (CGO_ENABLED=$cgo) …"
  local t0; t0=$(date +%s)
  # A cold build takes minutes per binary; a heartbeat shows it is still moving.
  ( while sleep 30; do echo "      … $name still building, $(( $(date +%s) - t0 ))s"; done ) &
  local ticker=$!
  local rc=0
  local verb=(build); [[ $name != *.test ]] || verb=(test -c)
  (cd "$module_dir" && CGO_ENABLED=$cgo go "${verb[@]}" -mod="$mod_mode" -trimpath \
      -ldflags "-s -w $ldflags" -o "$out_dir/$name.partial" "$package") || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "error: building $name failed (exit $rc)" >&2
    exit "$rc"
  fi
  mv "$out_dir/$name.partial" "$out_dir/$name"
  echo "$stamp" > "$stamp_file"
  echo "      $name built in $(( $(date +%s) - t0 ))s"
}

if [ "${1:-}" = conformance ]; then
  # The upstream conformance suite of the same version (see `make conformance`).
  total=3
  conformance="$here/conformance"
  conformance_ldflags=$(kubernetes_ldflags "$conformance" "$KUBERNETES_VERSION")
  build "$bin_dir" e2e.test "$conformance" k8s.io/kubernetes/test/e2e 0 "$conformance_ldflags"
  build "$bin_dir" ginkgo "$conformance" github.com/onsi/ginkgo/v2/ginkgo 0 ""
  build "$bin_dir" agnhost "$conformance" k8s.io/kubernetes/test/images/agnhost 0 ""
  # The test certificate upstream's agnhost image carries for its `porter` command.
  source_dir=$(cd "$conformance" && go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$bin_dir/agnhost-porter"
  install -m 0644 "$source_dir"/test/images/agnhost/porter/localhost.{crt,key} "$bin_dir/agnhost-porter/"
  # The files upstream's kitten and nautilus images add to agnhost, and httpd's index page.
  for image in kitten nautilus; do
    mkdir -p "$bin_dir/test-images/$image"
    install -m 0644 "$source_dir"/test/images/$image/html/* "$bin_dir/test-images/$image/"
  done
  mkdir -p "$bin_dir/test-images/httpd"
  install -m 0644 "$source_dir"/test/images/httpd/index.html "$bin_dir/test-images/httpd/"
  echo "conformance suite ready in $(( $(date +%s) - started ))s: Kubernetes ${KUBERNETES_VERSION}'s e2e.test, ginkgo and agnhost"
  echo "$bin_dir"
  exit 0
fi

k8s="$here/kubernetes"
k8s_ldflags=$(kubernetes_ldflags "$k8s" "$KUBERNETES_VERSION")
# Upstream links these statically; the kubelet is the one server binary it builds with cgo.
build "$bin_dir" kube-apiserver "$k8s" k8s.io/kubernetes/cmd/kube-apiserver 0 "$k8s_ldflags"
build "$bin_dir" kube-controller-manager "$k8s" k8s.io/kubernetes/cmd/kube-controller-manager 0 "$k8s_ldflags"
build "$bin_dir" kube-scheduler "$k8s" k8s.io/kubernetes/cmd/kube-scheduler 0 "$k8s_ldflags"
build "$bin_dir" kubectl "$k8s" k8s.io/kubernetes/cmd/kubectl 0 "$k8s_ldflags"
build "$bin_dir" kube-proxy "$k8s" k8s.io/kubernetes/cmd/kube-proxy 0 "$k8s_ldflags"
build "$bin_dir" kubelet "$k8s" k8s.io/kubernetes/cmd/kubelet 1 "$k8s_ldflags"
build "$bin_dir" etcd "$here/etcd" go.etcd.io/etcd/server/v3 0 \
  "-X go.etcd.io/etcd/api/v3/version.GitSHA=module-${ETCD_VERSION}"
build "$bin_dir" etcdctl "$here/etcd" go.etcd.io/etcd/etcdctl/v3 0 \
  "-X go.etcd.io/etcd/api/v3/version.GitSHA=module-${ETCD_VERSION}"
build "$bin_dir" runsc "$here/gvisor" gvisor.dev/gvisor/runsc 0 \
  "-X gvisor.dev/gvisor/runsc/version.version=${GVISOR_VERSION}"
# gVisor's shim needs two changes to run under Debian bookworm's containerd 1.6 on hosts like these
# VMs, made in a vendored copy outside the repository (Go cannot overlay module-cache files):
# - it sets its own OOM score to -999, which needs CAP_SYS_RESOURCE (withheld here even from root),
#   and refuses to start otherwise: use 0 (containerd's runc shim takes its parent's score + 1);
# - its containerd 2 shim library answers `start` with JSON bootstrap parameters, which containerd
#   1.6 cannot read: answer with the plain socket address, which every containerd understands.
patched="$cache_root/patched/gvisor-${GVISOR_VERSION}"
manager="$patched/vendor/gvisor.dev/gvisor/pkg/shim/v1/manager.go"
shimlib="$patched/vendor/github.com/containerd/containerd/v2/pkg/shim/shim.go"
if ! grep -qs "stockade:" "$manager" || ! grep -qs "stockade:" "$shimlib"; then
  echo "      vendoring gVisor to patch its shim for containerd 1.6 …"
  rm -rf "$patched"; mkdir -p "$patched"
  cp "$here/gvisor/go.mod" "$here/gvisor/go.sum" "$patched/"
  (cd "$patched" && go mod vendor)
  sed -i 's/oomScoreMax = -999$/oomScoreMax = 0 \/\/ stockade: was -999 (needs CAP_SYS_RESOURCE)/' "$manager"
  sed -i 's/data, err := json.Marshal(&params)$/data, err := json.RawMessage(params.Address), error(nil) \/\/ stockade: plain address/' \
    "$shimlib"
  grep -q "stockade:" "$manager" && grep -q "stockade:" "$shimlib" \
    || { echo "error: gVisor's shim changed; review the patches in hack/testbin/build.sh" >&2; exit 1; }
  grep -n "stockade:" "$manager" "$shimlib" > "$patched/PATCHED"
fi
build "$bin_dir" containerd-shim-runsc-v1 "$patched" gvisor.dev/gvisor/shim 0 "" vendor
build "$bin_dir" coredns "$here/coredns" github.com/coredns/coredns 0 ""
build "$bin_dir" registry "$here/registry" github.com/distribution/distribution/v3/cmd/registry 0 \
  "-X github.com/distribution/distribution/v3/version.version=${REGISTRY_VERSION}"
build "$bin_dir" kube-router "$here/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router 0 \
  "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=${KUBE_ROUTER_FORK_VERSION}"
build "$bin_dir" metrics-server "$here/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server 0 \
  "-X k8s.io/component-base/version.gitVersion=${METRICS_SERVER_VERSION}"
# The kstatus library as a command: the tests judge the Tenant's status conventions with it.
build "$bin_dir" kstatus "$here/kstatus" stockade.dev/testbin/kstatus 0 ""

previous="$here/kubernetes-previous"
previous_ldflags=$(kubernetes_ldflags "$previous" "$PREVIOUS_KUBERNETES_VERSION")
build "$previous_bin_dir" kube-apiserver "$previous" k8s.io/kubernetes/cmd/kube-apiserver 0 "$previous_ldflags"
build "$previous_bin_dir" kube-controller-manager "$previous" k8s.io/kubernetes/cmd/kube-controller-manager 0 "$previous_ldflags"
build "$previous_bin_dir" kube-scheduler "$previous" k8s.io/kubernetes/cmd/kube-scheduler 0 "$previous_ldflags"
build "$previous_bin_dir" etcd "$here/etcd-previous" go.etcd.io/etcd/server/v3 0 \
  "-X go.etcd.io/etcd/api/v3/version.GitSHA=module-${PREVIOUS_ETCD_VERSION}"

echo "test binaries ready in $(( $(date +%s) - started ))s: Kubernetes ${KUBERNETES_VERSION} (and ${PREVIOUS_KUBERNETES_VERSION}'s control plane), etcd ${ETCD_VERSION} (and ${PREVIOUS_ETCD_VERSION}), gVisor ${GVISOR_VERSION}, CoreDNS ${COREDNS_VERSION}, registry ${REGISTRY_VERSION}, metrics-server ${METRICS_SERVER_VERSION}, kube-router ${KUBE_ROUTER_FORK_VERSION}"
echo "$bin_dir"
