#!/usr/bin/env bash
# make deploy-check: a real API server (apiserver.sh, in a temporary
# directory) validates every manifest of deploy/ with a server-side dry run:
# schema, unknown fields (kubectl's strict validation), and the API
# server's own rules (Bidirectional mount propagation only when privileged,
# privileged containers allowed, RBAC escalation checks). Nothing is
# created. Exits non-zero when any object is rejected.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/sluice-deploy-check.XXXXXX)
cleanup() {
	"$root/hack/k8s/apiserver.sh" stop "$dir" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

"$root/hack/k8s/apiserver.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
. "$dir/env"
export KUBECONFIG
kubectl="$SLUICE_K8S_BIN/kubectl"
# The API server makes kube-system itself; should a version not, the dry
# run would reject every namespaced object for want of it.
"$kubectl" get namespace kube-system >/dev/null 2>&1 || "$kubectl" create namespace kube-system
"$kubectl" apply --dry-run=server --validate=strict -f "$root/deploy/"
echo "deploy/: every object accepted (server-side dry run)"
