#!/usr/bin/env bash
# make test-cluster: brings the lab cluster up (hack/cluster/cluster.sh),
# deploys sluice as the only service proxy (hack/cluster/deploy.sh), runs
# the cluster suite (test/cluster: the tutorials' labs, LoadBalancer from
# outside, faults, Kubernetes' own Service conformance specs) and removes
# the cluster, whatever the outcome: only what `up` made is killed.
# With CLUSTER_KEEP=1 the cluster stays up afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
RUN=${CLUSTER_RUN:-/run/sluice-cluster}

./hack/cluster/cluster.sh down >/dev/null 2>&1 || true
[ "${CLUSTER_KEEP:-}" = 1 ] || trap './hack/cluster/cluster.sh down' EXIT
./hack/cluster/cluster.sh up
./hack/cluster/deploy.sh sluice
"$GO" vet -tags cluster ./test/cluster/
"$GO" test -tags cluster -count=1 -p 1 -timeout 60m -v ./test/cluster/ ${CLUSTER_TEST_ARGS:-} 2>&1 |
	tee "$RUN/test.log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test\.go:)' || true
grep -qE '^ok\s' "$RUN/test.log" || { tail -60 "$RUN/test.log"; exit 1; }
