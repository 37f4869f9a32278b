#!/usr/bin/env bash
# make cluster-e2e-table: Kubernetes' own [sig-network] Services specs,
# widened from the 15 conformance specs to every non-disruptive one that
# needs no cloud provider, no IPv6 and no SCTP (the lab's kernel has no
# SCTP module), on the lab cluster with kube-proxy (nftables), then with
# sluice. The ginkgo CLI runs the specs E2E_PROCS at a time, as
# Kubernetes' own CI does; the table (spec, kube-proxy, sluice) goes to
# stdout and to $out/e2e-table.md, the logs and JUnit reports to
# $out/e2e-PROXY/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
RUN=${CLUSTER_RUN:-/run/sluice-cluster}
out=${COMPARE_DIR:-/var/cache/sluice-k8s/compare}
FOCUS=${E2E_FOCUS:-'\[sig-network\] Services '}
SKIP=${E2E_SKIP:-'\[Disruptive\]|\[Feature:|SCTP|IPv6|[Dd]ual[- ]?[Ss]tack'}
PROCS=${E2E_PROCS:-4}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
mkdir -p "$out"

bin=$(./hack/cluster/binaries.sh)
# The ginkgo CLI of the version e2e.test is built with: it runs a built
# suite's specs in parallel processes.
ginkgo=$bin/ginkgo
if [ ! -x "$ginkgo" ]; then
	src=$(GOFLAGS=-mod=mod "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
		sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	ver=$(awk '$1 == "github.com/onsi/ginkgo/v2" { print $2; exit }' "$src/go.mod")
	work=$(mktemp -d /tmp/sluice-ginkgo.XXXXXX)
	(cd "$work" && printf 'module sluice.local/ginkgobin\ngo 1.26\n' >go.mod &&
		GOFLAGS=-mod=mod "$GO" get "github.com/onsi/ginkgo/v2/ginkgo@$ver" >/dev/null 2>&1 &&
		CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -o "$work/ginkgo" github.com/onsi/ginkgo/v2/ginkgo)
	mv "$work/ginkgo" "$ginkgo"
	rm -rf "$work"
fi

./hack/cluster/cluster.sh down >/dev/null 2>&1 || true
[ "${CLUSTER_KEEP:-}" = 1 ] || trap './hack/cluster/cluster.sh down' EXIT
./hack/cluster/cluster.sh up
# shellcheck source=/dev/null
. "$RUN/env"

run_specs() {
	local proxy=$1 dir=$out/e2e-$1 t0
	./hack/cluster/deploy.sh "$proxy"
	rm -rf "$dir"
	mkdir -p "$dir/dumps"
	t0=$(date +%s)
	echo "e2e-table: the specs with $proxy, $PROCS at a time (log $dir/ginkgo.log)"
	nsenter --net="/run/netns/$CLUSTER_CLIENT_NS" "$ginkgo" --procs="$PROCS" --no-color --timeout=90m \
		--focus="$FOCUS" --skip="$SKIP" --output-dir="$dir" --junit-report=junit.xml \
		"$bin/e2e.test" -- --kubeconfig="$KUBECONFIG" --kubectl-path="$bin/kubectl" --provider=local \
		--report-dir="$dir/dumps" >"$dir/ginkgo.log" 2>&1 || true
	echo "e2e-table: $proxy took $(($(date +%s) - t0)) s: $(grep -aE '^(Ran|SUCCESS|FAIL)' "$dir/ginkgo.log" | tr '\n' ' ')"
	[ -s "$dir/junit.xml" ] || { tail -30 "$dir/ginkgo.log" >&2; echo "e2e-table: no report with $proxy" >&2; exit 1; }
	./hack/cluster/deploy.sh remove
}

for p in kube-proxy sluice; do
	run_specs "$p"
done
"$GO" run ./hack/cluster/e2etable "kube-proxy (nftables)=$out/e2e-kube-proxy/junit.xml" "sluice=$out/e2e-sluice/junit.xml" |
	tee "$out/e2e-table.md" "$RUN/e2e-table.md"
