#!/usr/bin/env bash
# An offline Kubernetes cluster in network namespaces, for sluice's cluster
# suite (make test-cluster) and for trying sluice as users deploy it:
#
#   hack/cluster/cluster.sh up      control plane, two nodes, images; no proxy
#   hack/cluster/cluster.sh down    stops and removes only what `up` made
#   hack/cluster/cluster.sh env     prints KUBECONFIG=... and the lab's addresses
#
# Layout (every address lives only inside these namespaces):
#   slc-underlay  bridge br0, 192.168.70.1/24: the nodes' shared L2
#   slc-cp        192.168.70.2: etcd, kube-apiserver (:6443),
#                 kube-controller-manager, kube-scheduler
#   slc-node1/2   192.168.70.11/.12: containerd, kubelet, CNI bridge cni0 with
#                 pod CIDR 10.245.1.0/24 / 10.245.2.0/24, routes to the other
#                 node's pods over the underlay
#   slc-ext       192.168.70.100: the external client, with no route to pods
# Services: 10.96.0.0/12 (kube-dns at 10.96.0.10). Every component that
# configures networking runs with only its network namespace switched
# (nsenter --net): `ip netns exec` would give it a private mount namespace,
# and containerd must see the volumes kubelet mounts. Nothing touches the
# machine's own interfaces, routes or firewall.
#
# Where a lab node differs from a real one: the nodes share one kernel, one
# cgroup tree (kubelet's cgroupRoot is /sluice-nodeN in each v1 controller,
# and a cgroup2 directory per node under the lab's own cgroup2 mount holds
# the node's processes for socket-level load balancing), and one bpffs (the
# lab mounts its own, shared, at $CLUSTER_RUN/bpffs; sluice pins per node).
#
# Binaries come from hack/cluster/binaries.sh (cache outside the checkout),
# images from hack/cluster/images.sh (no registry). State: CLUSTER_RUN
# (/run/sluice-cluster: certificates, kubeconfigs, logs, sockets) and
# CLUSTER_DATA (/var/lib/sluice-cluster: etcd, containerd and kubelet roots).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RUN=${CLUSTER_RUN:-/run/sluice-cluster}
DATA=${CLUSTER_DATA:-/var/lib/sluice-cluster}
NODES=(node1 node2)
P=slc-
UNDERLAY=192.168.70
CP_IP=$UNDERLAY.2
EXT_IP=$UNDERLAY.100
SERVICE_CIDR=10.96.0.0/12
CLUSTER_CIDR=10.245.0.0/16
DNS_IP=10.96.0.10
READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-180}

log() { echo "cluster: $*" >&2; }
die() {
	log "$*"
	exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

node_ip() { echo "$UNDERLAY.$((10 + ${1#node}))"; }
pod_cidr() { echo "10.245.${1#node}.0/24"; }
in_ns() {
	local ns=$1
	shift
	nsenter --net="/run/netns/$P$ns" "$@"
}

# wait_for SECONDS WHAT CMD...: runs CMD until it succeeds.
wait_for() {
	local secs=$1 what=$2 t0
	shift 2
	t0=$(now)
	until "$@" >/dev/null 2>&1; do
		if [ "$(awk -v a="$t0" -v b="$(now)" -v t="$secs" 'BEGIN { print (b - a > t) }')" = 1 ]; then
			log "$what: not within ${secs}s"
			return 1
		fi
		sleep 0.5
	done
	log "$what ($(elapsed "$t0")s)"
}

# --- processes -----------------------------------------------------------------

# start NAME NS CMD...: runs CMD in the background in namespace NS, its
# output in $RUN/NAME.log and its pid in $RUN/NAME.pid.
start() {
	local name=$1 ns=$2
	shift 2
	local unset_args=() v
	# etcd reads every ETCD_* variable as a flag.
	for v in $(compgen -e); do
		case $v in ETCD_* | KUBECONFIG) unset_args+=(-u "$v") ;; esac
	done
	env "${unset_args[@]}" setsid nsenter --net="/run/netns/$P$ns" "$@" </dev/null >>"$RUN/$name.log" 2>&1 &
	echo $! >"$RUN/$name.pid"
}

# pid_of NAME: the pid in $RUN/NAME.pid while that process runs and is ours.
pid_of() {
	local f="$RUN/$1.pid" pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	[ -r "/proc/$pid/cmdline" ] || return 0
	grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 0
	tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -e "$RUN" -e "$DATA" && echo "$pid"
	return 0
}

stop_one() {
	local name=$1 pid i
	pid=$(pid_of "$name")
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			[ -n "$(pid_of "$name")" ] || break
			sleep 0.1
		done
		[ -z "$(pid_of "$name")" ] || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$RUN/$name.pid"
}

# --- network -------------------------------------------------------------------

ns_add() {
	ip netns add "$P$1"
	in_ns "$1" ip link set lo up
}

# plug NS ADDR: a veth from NS (eth0, ADDR/24) to the underlay's bridge.
plug() {
	local ns=$1 addr=$2
	ip link add "u-$ns" netns "${P}underlay" type veth peer name eth0 netns "$P$ns"
	in_ns underlay ip link set "u-$ns" master br0 up
	in_ns "$ns" ip addr add "$addr/24" dev eth0
	in_ns "$ns" ip link set eth0 up
}

network_up() {
	ns_add underlay
	in_ns underlay ip link add br0 type bridge
	in_ns underlay ip addr add "$UNDERLAY.1/24" dev br0
	in_ns underlay ip link set br0 up
	ns_add cp
	plug cp "$CP_IP"
	in_ns cp ip route add default via "$UNDERLAY.1"
	ns_add ext
	plug ext "$EXT_IP"
	local n m
	for n in "${NODES[@]}"; do
		ns_add "$n"
		plug "$n" "$(node_ip "$n")"
		in_ns "$n" ip route add default via "$UNDERLAY.1"
		in_ns "$n" sysctl -qw net.ipv4.ip_forward=1
		in_ns cp ip route add "$(pod_cidr "$n")" via "$(node_ip "$n")"
		for m in "${NODES[@]}"; do
			[ "$m" = "$n" ] || in_ns "$n" ip route add "$(pod_cidr "$m")" via "$(node_ip "$m")"
		done
	done
	log "network: underlay $UNDERLAY.0/24, control plane $CP_IP, nodes ${NODES[*]}, external client $EXT_IP"
}

# --- certificates --------------------------------------------------------------

sign() {
	local name=$1 subj=$2 ext=$3 d=$RUN/pki
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$name.key" 2>/dev/null
	openssl req -new -key "$d/$name.key" -subj "$subj" -out "$d/$name.csr"
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" >"$d/$name.ext"
	openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
	rm -f "$d/$name.csr" "$d/$name.ext"
}

client_cert() { sign "$1" "$2" "extendedKeyUsage=clientAuth"; }

kubeconfig() {
	local name=$1
	cat >"$RUN/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-lab
  cluster: {server: "https://$CP_IP:6443", certificate-authority: "$RUN/pki/ca.crt"}
users:
- name: $name
  user: {client-certificate: "$RUN/pki/$name.crt", client-key: "$RUN/pki/$name.key"}
contexts:
- name: sluice-lab
  context: {cluster: sluice-lab, user: $name}
current-context: sluice-lab
EOF
}

certs() {
	local d=$RUN/pki n
	mkdir -p "$d"
	(
		umask 077
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
		openssl req -x509 -new -key "$d/ca.key" -subj "/CN=sluice-lab-ca" -days 3650 \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$d/ca.crt"
		sign apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:$CP_IP,IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
		client_cert admin "/O=system:masters/CN=lab-admin"
		client_cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
		client_cert controller-manager "/CN=system:kube-controller-manager"
		client_cert scheduler "/CN=system:kube-scheduler"
		client_cert kube-proxy "/CN=system:kube-proxy"
		for n in "${NODES[@]}"; do
			client_cert "$n" "/O=system:nodes/CN=system:node:$n"
			sign "$n-serving" "/CN=$n" "extendedKeyUsage=serverAuth
subjectAltName=IP:$(node_ip "$n"),DNS:$n"
		done
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/sa.key" 2>/dev/null
		openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub"
	)
	chmod 644 "$d"/*.crt "$d/sa.pub"
	for n in admin controller-manager scheduler kube-proxy "${NODES[@]}"; do kubeconfig "$n"; done
}

# --- control plane -------------------------------------------------------------

# Clients of the API server run in the control plane's namespace: its
# address exists only in the lab.
kubectl_admin() { in_ns cp "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }

apiserver_ready() {
	[ "$(in_ns cp curl -sS --max-time 2 --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" \
		--key "$RUN/pki/admin.key" "https://$CP_IP:6443/readyz" 2>/dev/null)" = ok ]
}

control_plane_up() {
	start etcd cp "$BIN/etcd" --name=lab --data-dir="$DATA/etcd" \
		--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
		--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
		--initial-cluster=lab=http://127.0.0.1:2380 --unsafe-no-fsync
	start_apiserver
	start controller-manager cp "$BIN/kube-controller-manager" \
		--kubeconfig="$RUN/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false \
		--service-account-private-key-file="$RUN/pki/sa.key" --root-ca-file="$RUN/pki/ca.crt" \
		--use-service-account-credentials=true \
		--cluster-cidr="$CLUSTER_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false \
		--cluster-signing-cert-file="$RUN/pki/ca.crt" --cluster-signing-key-file="$RUN/pki/ca.key"
	start scheduler cp "$BIN/kube-scheduler" --kubeconfig="$RUN/scheduler.kubeconfig" \
		--authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
		--authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false
}

# start_apiserver: also `cluster.sh restart-apiserver`, for the fault tests.
start_apiserver() {
	start apiserver cp "$BIN/kube-apiserver" \
		--etcd-servers=http://127.0.0.1:2379 \
		--advertise-address="$CP_IP" --bind-address=0.0.0.0 --secure-port=6443 \
		--tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
		--client-ca-file="$RUN/pki/ca.crt" \
		--kubelet-client-certificate="$RUN/pki/apiserver-kubelet.crt" \
		--kubelet-client-key="$RUN/pki/apiserver-kubelet.key" \
		--kubelet-preferred-address-types=InternalIP,Hostname \
		--authorization-mode=Node,RBAC \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$RUN/pki/sa.pub" \
		--service-account-signing-key-file="$RUN/pki/sa.key" \
		--allow-privileged=true \
		--shutdown-watch-termination-grace-period=2s \
		--profiling=false
	wait_for 90 "kube-apiserver ready on https://$CP_IP:6443" apiserver_ready
}

# --- nodes ---------------------------------------------------------------------

node_files() {
	local n=$1 d=$RUN/$n
	mkdir -p "$d/cni" "$d/kubelet-certs" "$DATA/$n/kubelet" "$DATA/$n/pods-logs" "$DATA/$n/containerd"
	echo "nameserver $UNDERLAY.1" >"$d/resolv.conf"
	cat >"$d/containerd.toml" <<EOF
version = 2
root = "$DATA/$n/containerd/root"
state = "$d/containerd-state"
[grpc]
  address = "$d/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DATA/$n/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.2"
  # No CAP_SYS_RESOURCE here: without this runc cannot lower a container's
  # oom_score_adj below its parent's and dies ("can't get final child's PID").
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$d/cni"
EOF
	# isGateway with the default route from IPAM (isDefaultGateway would add
	# it a second time: "file exists").
	cat >"$d/cni/10-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sluice-lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$(pod_cidr "$n")"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$DATA/$n/cni-ipam"
      }
    }
  ]
}
EOF
	cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine kind has cgroup v1 controllers only.
failCgroupV1: false
cgroupDriver: cgroupfs
# Each lab node its own cgroup root (they share one cgroup tree).
cgroupRoot: /sluice-$n
containerRuntimeEndpoint: unix://$d/containerd.sock
address: $(node_ip "$n")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $RUN/pki/$n-serving.crt
tlsPrivateKeyFile: $RUN/pki/$n-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $d/resolv.conf
podLogsDir: $DATA/$n/pods-logs
failSwapOn: false
serializeImagePulls: false
# The lab shares one disk with the machine: no evictions, no image GC.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
EOF
}

# cgroup2_up: the lab's own cgroup2 mount with one directory per node; a
# node's containerd and kubelet start there, so its host-network processes
# are in that cgroup (sluice attaches its socket programs to it). It is
# named as kubelet's cgroupRoot, because runc on a v1 host also puts each
# container at the same path of the unified hierarchy
# (/sluice-nodeN/kubepods/...): a hostNetwork Pod is then under the node's
# directory, as on a real node, where it is under the hierarchy's root.
cgroup2_up() {
	mkdir -p "$RUN/cgroup2"
	mountpoint -q "$RUN/cgroup2" || mount -t cgroup2 none "$RUN/cgroup2"
	local n c
	for n in "${NODES[@]}"; do
		mkdir -p "$RUN/cgroup2/sluice-$n"
		# kubelet's cgroupRoot must exist in every v1 hierarchy; a new
		# cpuset starts with no CPUs and no memory nodes.
		for c in /sys/fs/cgroup/*/; do
			[ -e "$c/cgroup.procs" ] && [ ! -e "$c/cgroup.controllers" ] || continue
			mkdir -p "$c/sluice-$n"
			if [ -e "$c/cpuset.cpus" ]; then
				cat "$c/cpuset.cpus" >"$c/sluice-$n/cpuset.cpus"
				cat "$c/cpuset.mems" >"$c/sluice-$n/cpuset.mems"
			fi
		done
	done
}

# bpffs_up: the lab's own bpffs, a shared mount (the host's /sys/fs/bpf is
# private here, and the DaemonSet's init container mounts with
# Bidirectional propagation, which a private mount refuses).
bpffs_up() {
	mkdir -p "$RUN/bpffs"
	if ! mountpoint -q "$RUN/bpffs"; then
		mount -t bpf bpf "$RUN/bpffs"
	fi
	mount --make-shared "$RUN/bpffs"
}

node_up() {
	local n=$1 d=$RUN/$1
	node_files "$n"
	start "$n-containerd" "$n" "$here/in-cgroup" "$RUN/cgroup2/sluice-$n" \
		containerd --config "$d/containerd.toml"
	wait_for 30 "$n: containerd up" ctr --address "$d/containerd.sock" version
	"$here/import.sh" "$d/containerd.sock" "$IMAGES" >"$RUN/$n-import.log" 2>&1 ||
		{ tail -20 "$RUN/$n-import.log" >&2; die "$n: image import failed"; }
	# The Node exists before its kubelet registers, with its pod CIDR (the
	# CNI config above uses the same one).
	kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels: {kubernetes.io/hostname: $n, kubernetes.io/os: linux}
spec:
  podCIDR: $(pod_cidr "$n")
  podCIDRs: [$(pod_cidr "$n")]
EOF
	start "$n-kubelet" "$n" "$here/in-cgroup" "$RUN/cgroup2/sluice-$n" \
		"$BIN/kubelet" --config="$d/kubelet.yaml" --kubeconfig="$RUN/$n.kubeconfig" \
		--hostname-override="$n" --node-ip="$(node_ip "$n")" --root-dir="$DATA/$n/kubelet" \
		--cert-dir="$d/kubelet-certs" --v=1
}

node_ready() {
	kubectl_admin get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

write_env() {
	cat >"$RUN/env" <<EOF
KUBECONFIG=$RUN/admin.kubeconfig
CLUSTER_RUN=$RUN
CLUSTER_BIN=$BIN
CLUSTER_IMAGES=$IMAGES
CLUSTER_API=https://$CP_IP:6443
CLUSTER_API_HOST=$CP_IP
# The API server is reachable only from the lab's namespaces, e.g.
# nsenter --net=/run/netns/\$CLUSTER_CLIENT_NS kubectl get nodes
CLUSTER_CLIENT_NS=${P}cp
CLUSTER_NODES="${NODES[*]}"
CLUSTER_NODE_IPS="$(for n in "${NODES[@]}"; do printf '%s ' "$(node_ip "$n")"; done)"
CLUSTER_EXT_NS=${P}ext
CLUSTER_UNDERLAY_NS=${P}underlay
CLUSTER_EXT_IP=$EXT_IP
CLUSTER_LB_POOL=$UNDERLAY.200/29
CLUSTER_DNS_IP=$DNS_IP
CLUSTER_BPFFS=$RUN/bpffs
CLUSTER_CGROUP2=$RUN/cgroup2
EOF
}

up() {
	[ ! -e "/run/netns/${P}cp" ] || die "a lab cluster is up already (hack/cluster/cluster.sh down first)"
	local t0
	t0=$(now)
	BIN=${CLUSTER_BIN:-$("$here/binaries.sh")}
	IMAGES=${CLUSTER_IMAGES:-/var/cache/sluice-k8s/images}
	CNI_BIN=${CNI_BIN:-/usr/lib/cni}
	[ -x "$CNI_BIN/bridge" ] || die "$CNI_BIN/bridge missing (apt-get install containernetworking-plugins)"
	command -v containerd >/dev/null || die "containerd missing (apt-get install containerd runc)"
	"$here/images.sh" "$IMAGES" >&2
	mkdir -p "$RUN" "$DATA"
	trap 'log "up failed: logs in $RUN; hack/cluster/cluster.sh down removes it"' ERR
	network_up
	certs
	cgroup2_up
	bpffs_up
	control_plane_up
	write_env
	local n
	for n in "${NODES[@]}"; do node_up "$n"; done
	for n in "${NODES[@]}"; do wait_for "$READY_TIMEOUT" "$n Ready" node_ready "$n"; done
	log "up in $(elapsed "$t0")s: . $RUN/env (no service proxy yet: hack/cluster/deploy.sh sluice|kube-proxy)"
}

# --- down ----------------------------------------------------------------------

# ours_netns NAME: a pod network namespace our nodes' CNI made (its eth0
# has an address of the lab's pod CIDRs).
ours_netns() {
	nsenter --net="/run/netns/$1" ip -4 -o addr show dev eth0 2>/dev/null | grep -q ' inet 10\.245\.'
}

kill_cgroup_v1() {
	local n=$1 c
	for c in /sys/fs/cgroup/pids/sluice-$n /sys/fs/cgroup/memory/sluice-$n; do
		[ -d "$c" ] || continue
		find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
	done
}

down() {
	local n i ns
	for n in "${NODES[@]}"; do stop_one "$n-kubelet"; done
	for n in "${NODES[@]}"; do
		# Containers outlive containerd (their shims): kill them by cgroup,
		# then the shims of this node's containerd.
		kill_cgroup_v1 "$n"
		pkill -KILL -f "containerd-shim-runc-v2 .*-address $RUN/$n/containerd.sock" 2>/dev/null || true
		stop_one "$n-containerd"
	done
	for i in scheduler controller-manager apiserver etcd sluice-proxy-node1 sluice-proxy-node2; do stop_one "$i"; done
	for n in "${NODES[@]}"; do
		pkill -KILL -f "kube-proxy .*$RUN/$n" 2>/dev/null || true
	done
	# The nodes' cgroup2 directories (the mount shows the machine's one
	# cgroup2 hierarchy), now that their processes are gone.
	for n in "${NODES[@]}"; do
		[ ! -d "$RUN/cgroup2/sluice-$n" ] || find "$RUN/cgroup2/sluice-$n" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	# Mounts under the lab's directories (pods' volumes, containers' rootfs,
	# the lab's cgroup2 and bpffs), deepest first.
	for i in $(awk -v r="$RUN" -v d="$DATA" 'index($2, r"/") == 1 || index($2, d"/") == 1 { print $2 }' /proc/self/mounts | sort -r); do
		umount -l "$i" 2>/dev/null || true
	done
	for ns in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
		if ours_netns "$ns"; then ip netns delete "$ns" 2>/dev/null || true; fi
	done
	for ns in cp ext "${NODES[@]}" underlay; do
		[ ! -e "/run/netns/$P$ns" ] || ip netns delete "$P$ns"
	done
	for n in "${NODES[@]}"; do
		for i in /sys/fs/cgroup/*/sluice-$n; do
			[ -d "$i" ] && find "$i" -depth -type d -exec rmdir {} + 2>/dev/null || true
		done
	done
	rm -rf "$DATA"
	rm -rf "${RUN:?}"
	log "down"
}

case ${1:-} in
up) up ;;
down) down ;;
env) cat "$RUN/env" ;;
restart-apiserver)
	# shellcheck disable=SC1091
	. "$RUN/env"
	BIN=$CLUSTER_BIN
	stop_one apiserver
	start_apiserver
	;;
*)
	sed -n '5,7s/^# *//p' "$0" >&2
	exit 2
	;;
esac
