#!/usr/bin/env bash
# Every suite. The suites that need a real API server (test/k8s, control/kube,
# internal/kubetest, deploy-check) wait for its binaries, which
# hack/k8s/binaries.sh builds in the background on a fresh machine (about
# 12 minutes, cached outside the checkout) while the other suites run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

build_log=$(mktemp /tmp/sluice-k8s-binaries.XXXXXX)
trap 'rm -f "$build_log"' EXIT
./hack/k8s/binaries.sh >"$build_log" 2>&1 &
build=$!

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
