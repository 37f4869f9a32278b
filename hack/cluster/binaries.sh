#!/usr/bin/env bash
# Builds what the offline cluster (hack/cluster/up.sh) runs beyond the API
# server's binaries (hack/k8s/binaries.sh): kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy (for the comparison), agnhost and
# e2e.test from k8s.io/kubernetes, and CoreDNS, all from the Go module
# proxy, into the same cache outside the checkout. Prints the bin dir.
#
# Each binary is built only when missing, so an interrupted build resumes
# and CI's warm runs build nothing.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
COREDNS_VER=${COREDNS_VER:-v1.14.7}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
here=$(cd "$(dirname "$0")" && pwd)

bin=$("$here/../k8s/binaries.sh")
# shellcheck source=../k8s/version.sh
. "$here/../k8s/version.sh"
K8S_CACHE=$(dirname "$(dirname "$bin")")

k8s_bins=(kube-controller-manager kube-scheduler kubelet kube-proxy agnhost e2e.test)
missing() {
	local b
	for b in "${k8s_bins[@]}" coredns; do [ -f "$bin/$b" ] && [ -x "$bin/$b" ] || echo "$b"; done
}
if [ -z "$(missing)" ]; then
	echo "$bin"
	exit 0
fi
exec 9>"$K8S_CACHE/.cluster-lock"
flock 9
if [ -z "$(missing)" ]; then
	echo "$bin"
	exit 0
fi

work=$(mktemp -d /tmp/sluice-cluster-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
staging_ver="v0.${K8S_VERSION#v1.}"

build_k8s() {
	local d="$work/k8s" src
	mkdir -p "$d"
	cd "$d"
	src=$(GOFLAGS=-mod=mod "$GO" mod download -json k8s.io/kubernetes@"$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	{
		echo "module sluice.local/k8sclusterbins"
		echo "go 1.26"
		echo "require k8s.io/kubernetes $K8S_VERSION"
		# Every staging module the release's own go.mod replaces, by its
		# published twin (the list grows between releases).
		grep -E '=> \./staging/' "$src/go.mod" | awk -v v="$staging_ver" '{ print "replace " $1 " => " $1 " " v }'
	} >go.mod
	# The mains, and what e2e_test.go imports (go mod tidy records a
	# dependency's test imports only when something in this module names them).
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		for p in cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy test/images/agnhost test/e2e; do
			echo "	_ \"k8s.io/kubernetes/$p\""
		done
		sed -n '/^import (/,/^)/p' "$src/test/e2e/e2e_test.go" | grep -oE '"[^"]+"' | grep '\.' | sed 's/^/	_ /'
		echo ')'
	} >tools.go
	local tries=0 out
	until out=$("$GO" mod tidy -e 2>&1); do
		tries=$((tries + 1))
		[ $tries -lt 3 ] || { echo "$out" >&2; return 1; }
	done
	local pkgs=() b
	for b in kube-controller-manager kube-scheduler kubelet kube-proxy; do
		[ -x "$bin/$b" ] || pkgs+=("k8s.io/kubernetes/cmd/$b")
	done
	[ -x "$bin/agnhost" ] || pkgs+=(k8s.io/kubernetes/test/images/agnhost)
	if [ ${#pkgs[@]} -gt 0 ]; then
		CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w $(k8s_version_ldflags)" -o "$work/out/" "${pkgs[@]}"
		for b in "$work"/out/*; do mv "$b" "$bin/"; done
	fi
	if [ ! -x "$bin/e2e.test" ]; then
		CGO_ENABLED=0 "$GO" test -c -trimpath -ldflags="-s -w $(k8s_version_ldflags)" -o "$work/e2e.test" k8s.io/kubernetes/test/e2e
		mv "$work/e2e.test" "$bin/e2e.test"
	fi
}

build_coredns() {
	local d="$work/coredns"
	mkdir -p "$d"
	cd "$d"
	printf 'module sluice.local/corednsbin\ngo 1.26\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VER" >go.mod
	printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/coredns/coredns"\n' >tools.go
	"$GO" mod tidy -e >/dev/null 2>&1 || "$GO" mod tidy
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w" -o "$work/coredns.bin" github.com/coredns/coredns
	mv "$work/coredns.bin" "$bin/coredns"
}

echo "cluster binaries: building $(missing | tr '\n' ' ')into $bin (15-20 min on 2 cores the first time)" >&2
[ -x "$bin/coredns" ] || (build_coredns) >&2
[ -n "$(missing | grep -v coredns)" ] && (build_k8s) >&2
[ -z "$(missing)" ] || { echo "cluster binaries: still missing: $(missing | tr '\n' ' ')" >&2; exit 1; }
echo "$bin"
