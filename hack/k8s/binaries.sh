#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy (no
# internet, no release downloads) into a cache outside the checkout, so
# later runs reuse them. Prints the cache's bin directory.
#
#   hack/k8s/binaries.sh            build what is missing, print the bin dir
#   K8S_CACHE=/some/dir hack/k8s/binaries.sh
#
# k8s.io/kubernetes carries replace directives for its staging modules,
# which `go build` ignores in a dependency: the throwaway module below
# requires it and replaces each staging module with its published twin.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VER=${ETCD_VER:-v3.7.3}
K8S_CACHE=${K8S_CACHE:-/var/cache/sluice-k8s}
# -v2: the binaries say their version (version.sh).
bin="$K8S_CACHE/$K8S_VERSION-etcd$ETCD_VER-v2/bin"
# shellcheck source=version.sh
. "$(dirname "$0")/version.sh"
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

have() { [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ -x "$bin/etcd" ]; }
if have; then
	echo "$bin"
	exit 0
fi
mkdir -p "$bin"
# One builder at a time: a second caller waits for the first.
exec 9>"$K8S_CACHE/.lock"
flock 9
if have; then
	echo "$bin"
	exit 0
fi

work=$(mktemp -d /tmp/sluice-k8s-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
staging_ver="v0.${K8S_VERSION#v1.}"
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
	cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
	cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
	kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
	mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

build_k8s() {
	local d="$work/k8s"
	mkdir -p "$d"
	cd "$d"
	{
		echo "module sluice.local/k8sbins"
		echo "go 1.26"
		echo "require k8s.io/kubernetes $K8S_VERSION"
		for m in "${staging[@]}"; do echo "replace k8s.io/$m => k8s.io/$m $staging_ver"; done
	} >go.mod
	cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
	# Staging modules the release does not publish are dropped from the
	# replace list (go mod tidy names them).
	local tries=0
	until out=$("$GO" mod tidy -e 2>&1); do
		tries=$((tries + 1))
		[ $tries -lt 3 ] || { echo "$out" >&2; return 1; }
	done
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w $(k8s_version_ldflags)" -o "$bin/kubectl" k8s.io/kubernetes/cmd/kubectl
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w $(k8s_version_ldflags)" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
}

build_etcd() {
	local d="$work/etcd"
	mkdir -p "$d"
	cd "$d"
	printf 'module sluice.local/etcdbin\ngo 1.26\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VER" >go.mod
	printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
	"$GO" mod tidy -e >/dev/null 2>&1 || "$GO" mod tidy
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
}

echo "k8s binaries: building kube-apiserver/kubectl $K8S_VERSION and etcd $ETCD_VER into $bin (about 12 min on 2 cores)" >&2
[ -x "$bin/etcd" ] || build_etcd >&2
[ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] || build_k8s >&2
have
echo "$bin"
