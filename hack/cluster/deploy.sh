#!/usr/bin/env bash
# Puts a service proxy on the lab cluster (hack/cluster/cluster.sh up):
#
#   hack/cluster/deploy.sh sluice       kubectl apply of deploy/, with the
#                                       lab's overlay (overlay/), then CoreDNS
#   hack/cluster/deploy.sh kube-proxy   kube-proxy (nftables mode) on every
#                                       node, then CoreDNS, for comparison
#   hack/cluster/deploy.sh remove       whichever is there, and CoreDNS
#
# Waits until every node's proxy is ready and CoreDNS answers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RUN=${CLUSTER_RUN:-/run/sluice-cluster}
# shellcheck disable=SC1091
. "$RUN/env"
export KUBECONFIG
k() { nsenter --net="/run/netns/$CLUSTER_CLIENT_NS" "$CLUSTER_BIN/kubectl" "$@"; }
log() { echo "cluster: $*" >&2; }

sluice_up() {
	# The ConfigMap: the API server's real address (sluice serves the
	# kubernetes Service itself) and the lab's LoadBalancer pool.
	k patch --local -f "$root/deploy/configmap.yaml" --type merge -o yaml -p "$(printf \
		'{"data":{"KUBERNETES_SERVICE_HOST":"%s","KUBERNETES_SERVICE_PORT":"6443","LB_IP_POOL":"%s"}}' \
		"$CLUSTER_API_HOST" "$CLUSTER_LB_POOL")" | k apply -f -
	k apply -f "$root/deploy/rbac.yaml"
	sed "s#@RUN@#$RUN#g" "$here/overlay/daemonset-patch.yaml" >"$RUN/daemonset-patch.yaml"
	k patch --local -f "$root/deploy/daemonset.yaml" --type strategic --patch-file "$RUN/daemonset-patch.yaml" -o yaml |
		k apply -f -
	k -n kube-system rollout status daemonset/sluice --timeout=180s
}

kube_proxy_up() {
	local n i=1
	for n in $CLUSTER_NODES; do
		cat >"$RUN/$n/kube-proxy.yaml" <<EOC
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: "$RUN/kube-proxy.kubeconfig"}
hostnameOverride: $n
clusterCIDR: 10.245.0.0/16
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
EOC
		setsid nsenter --net="/run/netns/slc-$n" "$here/in-cgroup" \
			"$CLUSTER_CGROUP2/sluice-$n" "$CLUSTER_BIN/kube-proxy" --config="$RUN/$n/kube-proxy.yaml" \
			</dev/null >>"$RUN/kube-proxy-$n.log" 2>&1 &
		echo $! >"$RUN/kube-proxy-$n.pid"
		i=$((i + 1))
	done
	for n in $CLUSTER_NODES; do
		local t=0
		until nsenter --net="/run/netns/slc-$n" curl -fsS --max-time 2 http://127.0.0.1:10256/healthz >/dev/null 2>&1; do
			t=$((t + 1))
			[ $t -lt 120 ] || { tail -20 "$RUN/kube-proxy-$n.log" >&2; log "kube-proxy on $n not healthy"; exit 1; }
			sleep 0.5
		done
	done
	log "kube-proxy (nftables) healthy on $CLUSTER_NODES"
}

dns_up() {
	k apply -f "$here/manifests/coredns.yaml"
	k -n kube-system rollout status deployment/coredns --timeout=180s
}

remove() {
	k delete --ignore-not-found -f "$here/manifests/coredns.yaml" --wait=true >/dev/null || true
	k delete --ignore-not-found -n kube-system daemonset/sluice --wait=true >/dev/null || true
	local n pid
	for n in $CLUSTER_NODES; do
		if [ -s "$RUN/kube-proxy-$n.pid" ]; then
			pid=$(cat "$RUN/kube-proxy-$n.pid")
			if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$RUN"; then
				kill -TERM "$pid" 2>/dev/null || true
				while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
			fi
			rm -f "$RUN/kube-proxy-$n.pid"
			# What kube-proxy leaves behind in the node's netns.
			nsenter --net="/run/netns/slc-$n" "$CLUSTER_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
		fi
		# sluice's pinned datapath outlives its pods by design: removing it
		# is an uninstall (sluice uninstall), done by the agent's image.
		if [ -d "$CLUSTER_BPFFS/sluice-$n" ]; then
			nsenter --net="/run/netns/slc-$n" "$root/bin/sluice" uninstall --pin-dir "$CLUSTER_BPFFS/sluice-$n" >/dev/null 2>&1 || true
		fi
	done
}

case ${1:-} in
sluice) sluice_up && dns_up ;;
kube-proxy) kube_proxy_up && dns_up ;;
remove) remove ;;
*)
	sed -n '4,9s/^# *//p' "$0" >&2
	exit 2
	;;
esac
