#!/usr/bin/env bash
# Every suite. The suites that need a real API server (test/k8s, control/kube,
# internal/kubetest, deploy-check) wait for its binaries, which
# hack/k8s/binaries.sh builds in the background on a fresh machine (about
# 12 minutes, cached outside the checkout) while the other suites run; the
# lab cluster's binaries (hack/cluster/binaries.sh, some 8 minutes more)
# build after them, also in the background, and the cluster suite
# (hack/cluster/test.sh) runs last.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

build_log=$(mktemp /tmp/sluice-k8s-binaries.XXXXXX)
cluster_log=$(mktemp /tmp/sluice-cluster-binaries.XXXXXX)
trap 'rm -f "$build_log" "$cluster_log"' EXIT
./hack/k8s/binaries.sh >"$build_log" 2>&1 &
build=$!
# Waits for the first build's lock, then builds the rest.
./hack/cluster/binaries.sh >"$cluster_log" 2>&1 &
cluster_build=$!

"$GO" vet ./...
needs_api='/test/k8s$|/internal/kubetest$|/control/kube$'
"$GO" test -count=1 -p 1 -timeout 20m $("$GO" list ./... | grep -Ev "$needs_api")

if ! wait "$build"; then
	echo "building the API server's binaries failed:" >&2
	tail -40 "$build_log" >&2
	exit 1
fi
./hack/k8s/deploy-check.sh
"$GO" test -count=1 -p 1 -timeout 20m $("$GO" list ./... | grep -E "$needs_api")

if ! wait "$cluster_build"; then
	echo "building the lab cluster's binaries failed:" >&2
	tail -40 "$cluster_log" >&2
	exit 1
fi
GO="$GO" ./hack/cluster/test.sh
