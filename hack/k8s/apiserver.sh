#!/usr/bin/env bash
# A real Kubernetes API server for tests, on 127.0.0.1, with no internet:
# etcd and kube-apiserver built by hack/k8s/binaries.sh, certificates made
# here with openssl. Nothing runs but the API server and its store: no
# controller-manager, scheduler or kubelet.
#
#   hack/k8s/apiserver.sh start DIR            etcd + kube-apiserver; waits for /readyz
#   hack/k8s/apiserver.sh stop DIR             both stopped (TERM, then KILL); data kept
#   hack/k8s/apiserver.sh status DIR           what runs; exit 0 only if /readyz is ok
#   hack/k8s/apiserver.sh stop-apiserver DIR   kube-apiserver only; etcd keeps running
#   hack/k8s/apiserver.sh start-apiserver DIR  kube-apiserver again, on the same port
#
# DIR holds everything: ca.crt, the serving and admin certificates, the
# service-account key pair, etcd/ (the data), admin.kubeconfig, env (a
# sourceable KEY=VALUE file: KUBECONFIG, SLUICE_K8S_URL, PIDs), ports,
# *.pid, etcd.log and apiserver.log. `start` on an existing DIR reuses its
# certificates, data and ports, so objects survive a stop and start.
# `stop` removes only the pid files.
#
# The admin (admin.kubeconfig) is CN=sluice-admin, O=system:masters.
# Authorization is RBAC only. The ServiceAccount admission plugin is off:
# without a controller-manager no namespace gets its "default"
# ServiceAccount, and the plugin would reject every pod that names none.
# Tokens come from the TokenRequest API (issuer and signing key are set).
# Privileged containers are allowed, as in kubeadm's clusters (the
# DaemonSet's bpffs init container is one).
# On TERM the API server closes open watches within 2 s
# (--shutdown-watch-termination-grace-period), as in a rolling restart;
# otherwise it would wait for every watch to end and be killed, clients'
# watches hanging until then.
# The "kubernetes" Service exists but has no endpoints (the reconciler is
# off, as a loopback advertise address is not a valid endpoint).
#
# With SLUICE_K8S_OWNER_PID set (the Go tests set it to their own PID), a
# watchdog stops both processes once that process is gone, so a test that
# dies without its cleanup leaves nothing running.
#
# Settings (environment): SLUICE_K8S_BIN (a directory with etcd,
# kube-apiserver and kubectl; default: what binaries.sh prints),
# SLUICE_K8S_READY_TIMEOUT (seconds, default 60), SLUICE_K8S_STOP_GRACE
# (seconds before KILL, default 10). Variables named ETCD_* are never used
# and are removed from etcd's environment: etcd reads every one of them as
# a flag and refuses to start when one conflicts with its command line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
ready_timeout=${SLUICE_K8S_READY_TIMEOUT:-60}
stop_grace=${SLUICE_K8S_STOP_GRACE:-10}

usage() {
	sed -n '7,11s/^# *//p' "$self" >&2
	exit 2
}

log() { echo "k8s: $*" >&2; }
die() {
	log "$*"
	exit 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- processes ---------------------------------------------------------------

# pid_of NAME: the PID in DIR/NAME.pid if that process still runs and is
# ours (its command line names DIR), else nothing. A stale pid file whose
# number was reused by another process is never trusted.
pid_of() {
	local f="$dir/$1.pid" pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	[ -r "/proc/$pid/cmdline" ] || return 0
	if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"; then
		# A zombie is gone for our purposes.
		if ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
			echo "$pid"
		fi
	fi
}

# stop_one NAME: TERM, then KILL after the grace period; removes the pid file.
stop_one() {
	local name=$1 pid i
	pid=$(pid_of "$name")
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < stop_grace * 10; i++)); do
			[ -n "$(pid_of "$name")" ] || break
			sleep 0.1
		done
		if [ -n "$(pid_of "$name")" ]; then
			log "$name (pid $pid) ignored TERM for ${stop_grace}s: KILL"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				[ -n "$(pid_of "$name")" ] || break
				sleep 0.1
			done
		fi
		log "$name stopped (pid $pid)"
	fi
	rm -f "$dir/$name.pid"
}

tail_log() {
	echo "--- last lines of $1:" >&2
	tail -n "${2:-40}" "$1" >&2 || true
}

# --- ports -------------------------------------------------------------------

# Ports in use on this host in any state (TIME_WAIT included), IPv4 and IPv6.
used_ports() {
	local f sl addr rest
	for f in /proc/net/tcp /proc/net/tcp6; do
		[ -r "$f" ] || continue
		while read -r sl addr rest; do
			[[ $addr == *:* ]] && echo $((16#${addr##*:}))
		done <"$f"
	done | sort -un
}

# used_listen_port PORT: whether a socket listens on PORT.
used_listen_port() {
	local f sl addr rem st rest
	for f in /proc/net/tcp /proc/net/tcp6; do
		[ -r "$f" ] || continue
		while read -r sl addr rem st rest; do
			[[ $addr == *:* && $st == 0A ]] && [ $((16#${addr##*:})) -eq "$1" ] && return 0
		done <"$f"
	done
	return 1
}

port_free() {
	! used_ports | grep -qx "$1"
}

# A free port below the ephemeral range, so no outgoing connection takes it
# between now and the bind.
pick_port() {
	local used p i
	used=$(used_ports)
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12000))
		grep -qx "$p" <<<"$used" || grep -qx "$p" <<<"${taken:-}" || {
			taken="${taken:-}"$'\n'"$p"
			echo "$p"
			return
		}
	done
	die "no free port found"
}

# Ports are chosen once per DIR and kept, so a restart keeps the URL (and
# every kubeconfig written for it). A saved port another process took in
# the meantime is replaced, for the store at any time and for the API
# server only on a full start.
load_ports() {
	store_client_port="" store_peer_port="" apiserver_port=""
	if [ -f "$dir/ports" ]; then
		# shellcheck disable=SC1091
		. "$dir/ports"
	fi
}

save_ports() {
	printf 'store_client_port=%s\nstore_peer_port=%s\napiserver_port=%s\n' \
		"$store_client_port" "$store_peer_port" "$apiserver_port" >"$dir/ports"
}

# --- certificates ------------------------------------------------------------

need_openssl() {
	command -v openssl >/dev/null && return
	log "openssl missing: installing it"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
}

# sign NAME SUBJECT EXTENSIONS: a P-256 key and a certificate signed by the CA.
sign() {
	local name=$1 subj=$2 ext=$3
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
	openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr"
	printf '%s\n' "$ext" >"$dir/$name.ext"
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$dir/$name.ext" \
		-out "$dir/$name.crt" 2>/dev/null
	rm -f "$dir/$name.csr" "$dir/$name.ext"
}

make_certs() {
	[ -s "$dir/ca.crt" ] && [ -s "$dir/serving.crt" ] && [ -s "$dir/admin.crt" ] && [ -s "$dir/sa.pub" ] && return
	need_openssl
	local t0
	t0=$(now)
	(
		umask 077
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
		openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=sluice-test-ca" -days 3650 \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
		sign serving "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
		sign admin "/O=system:masters/CN=sluice-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
		# Service-account tokens: the API server signs with sa.key, verifies with sa.pub.
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/sa.key" 2>/dev/null
		openssl pkey -in "$dir/sa.key" -pubout -out "$dir/sa.pub"
	)
	chmod 644 "$dir/ca.crt" "$dir/serving.crt" "$dir/admin.crt" "$dir/sa.pub"
	log "certificates made in ${dir} ($(elapsed "$t0")s)"
}

# --- files for clients -------------------------------------------------------

url() { echo "https://127.0.0.1:$apiserver_port"; }

write_kubeconfig() {
	cat >"$dir/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-test
  cluster:
    server: $(url)
    certificate-authority: $dir/ca.crt
users:
- name: sluice-admin
  user:
    client-certificate: $dir/admin.crt
    client-key: $dir/admin.key
contexts:
- name: sluice-test
  context:
    cluster: sluice-test
    user: sluice-admin
current-context: sluice-test
EOF
}

write_env() {
	cat >"$dir/env" <<EOF
KUBECONFIG=$dir/admin.kubeconfig
SLUICE_K8S_URL=$(url)
SLUICE_K8S_DIR=$dir
SLUICE_K8S_BIN=$bin
SLUICE_K8S_CA=$dir/ca.crt
SLUICE_K8S_STORE_URL=http://127.0.0.1:$store_client_port
SLUICE_K8S_STORE_PID=$(pid_of etcd)
SLUICE_K8S_APISERVER_PID=$(pid_of apiserver)
EOF
}

# --- etcd --------------------------------------------------------------------

store_healthy() {
	curl -fsS --max-time 2 "http://127.0.0.1:$store_client_port/health" 2>/dev/null | grep -q '"health":"true"'
}

start_store() {
	if [ -n "$(pid_of etcd)" ]; then
		return
	fi
	if [ -z "$store_client_port" ] || ! port_free "$store_client_port"; then store_client_port=$(pick_port); fi
	if [ -z "$store_peer_port" ] || ! port_free "$store_peer_port"; then store_peer_port=$(pick_port); fi
	save_ports
	local unset_args=() v t0 pid
	for v in $(compgen -e); do
		case $v in ETCD_*) unset_args+=(-u "$v") ;; esac
	done
	local peer="http://127.0.0.1:$store_peer_port" client="http://127.0.0.1:$store_client_port"
	t0=$(now)
	# --unsafe-no-fsync: throwaway test data; a crash of the host may lose it.
	env "${unset_args[@]}" setsid "$bin/etcd" \
		--name=sluice \
		--data-dir="$dir/etcd" \
		--listen-client-urls="$client" \
		--advertise-client-urls="$client" \
		--listen-peer-urls="$peer" \
		--initial-advertise-peer-urls="$peer" \
		--initial-cluster="sluice=$peer" \
		--unsafe-no-fsync \
		</dev/null >>"$dir/etcd.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/etcd.pid"
	while ! store_healthy; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail_log "$dir/etcd.log"
			rm -f "$dir/etcd.pid"
			die "etcd exited before it was healthy"
		fi
		if [ "$(awk -v a="$t0" -v b="$(now)" -v t="$ready_timeout" 'BEGIN { print (b - a > t) }')" = 1 ]; then
			tail_log "$dir/etcd.log"
			stop_one etcd
			die "etcd not healthy within ${ready_timeout}s"
		fi
		sleep 0.1
	done
	log "etcd healthy on $client in $(elapsed "$t0")s (pid $pid)"
}

# --- kube-apiserver ----------------------------------------------------------

apiserver_ready() {
	[ "$(curl -sS --max-time 2 --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" \
		"$(url)/readyz" 2>/dev/null)" = ok ]
}

# start_apiserver keep|any: with keep, the saved port is required (a
# restart must not move the URL); with any, a taken port is replaced.
start_apiserver() {
	local mode=$1 t0 pid
	if [ -n "$(pid_of apiserver)" ]; then
		return
	fi
	if [ -z "$apiserver_port" ]; then
		apiserver_port=$(pick_port)
	elif ! port_free "$apiserver_port"; then
		# Right after a stop the port may linger in TIME_WAIT, which a
		# listener with SO_REUSEADDR (Go's default) binds through; only a
		# port another process listens on is taken.
		if used_listen_port "$apiserver_port"; then
			[ "$mode" = any ] || die "port $apiserver_port of the API server is taken by another process"
			log "port $apiserver_port is taken: the API server moves (kubeconfigs made for the old one are stale)"
			apiserver_port=$(pick_port)
		fi
	fi
	save_ports
	write_kubeconfig
	t0=$(now)
	setsid "$bin/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$store_client_port" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$apiserver_port" \
		--cert-dir="$dir/apiserver-certs" \
		--tls-cert-file="$dir/serving.crt" \
		--tls-private-key-file="$dir/serving.key" \
		--client-ca-file="$dir/ca.crt" \
		--authorization-mode=RBAC \
		--service-cluster-ip-range=10.96.0.0/12 \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$dir/sa.pub" \
		--service-account-signing-key-file="$dir/sa.key" \
		--disable-admission-plugins=ServiceAccount \
		--allow-privileged=true \
		--enable-priority-and-fairness=true \
		--endpoint-reconciler-type=none \
		--shutdown-watch-termination-grace-period=2s \
		--profiling=false \
		</dev/null >>"$dir/apiserver.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/apiserver.pid"
	while ! apiserver_ready; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail_log "$dir/apiserver.log"
			rm -f "$dir/apiserver.pid"
			write_env
			die "kube-apiserver exited before it was ready"
		fi
		if [ "$(awk -v a="$t0" -v b="$(now)" -v t="$ready_timeout" 'BEGIN { print (b - a > t) }')" = 1 ]; then
			tail_log "$dir/apiserver.log"
			stop_one apiserver
			write_env
			die "kube-apiserver not ready within ${ready_timeout}s"
		fi
		sleep 0.1
	done
	log "kube-apiserver ready on $(url) in $(elapsed "$t0")s (pid $pid, $(rss "$pid"))"
}

rss() {
	awk '/^VmRSS/ { printf "RSS %d MiB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "RSS ?"
}

# --- watchdog ----------------------------------------------------------------

start_watchdog() {
	local owner=${SLUICE_K8S_OWNER_PID:-}
	[ -n "$owner" ] || return 0
	[ -z "$(pid_of watchdog)" ] || return 0
	# DIR is an argument so that pid_of recognises the watchdog as ours.
	setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; export SLUICE_K8S_WATCHDOG=1; exec "$2" stop "$3"' \
		sluice-k8s-watchdog "$owner" "$self" "$dir" </dev/null >>"$dir/watchdog.log" 2>&1 &
	echo $! >"$dir/watchdog.pid"
}

# --- commands ----------------------------------------------------------------

[ $# -eq 2 ] || usage
cmd=$1
case $cmd in
start) mkdir -p "$2" ;;
*) [ -d "$2" ] || die "$2: no such directory" ;;
esac
dir=$(cd "$2" && pwd)
load_ports

resolve_bin() {
	if [ -n "${SLUICE_K8S_BIN:-}" ]; then
		bin=$SLUICE_K8S_BIN
	else
		bin=$("$here/binaries.sh")
	fi
	for b in etcd kube-apiserver kubectl; do
		[ -x "$bin/$b" ] || die "$bin/$b missing"
	done
}

case $cmd in
start)
	resolve_bin
	make_certs
	start_store
	start_apiserver any
	start_watchdog
	write_env
	cat "$dir/env"
	;;
start-apiserver)
	resolve_bin
	[ -s "$dir/ca.crt" ] || die "$dir has never been started: use start"
	start_store
	start_apiserver keep
	write_env
	cat "$dir/env"
	;;
stop-apiserver)
	bin=${SLUICE_K8S_BIN:-$(sed -n 's/^SLUICE_K8S_BIN=//p' "$dir/env" 2>/dev/null)}
	stop_one apiserver
	write_env
	;;
stop)
	bin=${SLUICE_K8S_BIN:-$(sed -n 's/^SLUICE_K8S_BIN=//p' "$dir/env" 2>/dev/null)}
	# The watchdog first: it would stop the others again.
	if [ "${SLUICE_K8S_WATCHDOG:-}" != 1 ]; then stop_one watchdog; fi
	stop_one apiserver
	stop_one etcd
	rm -f "$dir/watchdog.pid"
	[ ! -f "$dir/env" ] || write_env
	;;
status)
	rc=0
	for name in etcd apiserver watchdog; do
		pid=$(pid_of "$name")
		if [ -n "$pid" ]; then
			echo "$name: running, pid $pid, $(rss "$pid")"
		else
			echo "$name: stopped"
			[ "$name" = watchdog ] || rc=1
		fi
	done
	if [ -n "$apiserver_port" ] && [ -n "$(pid_of apiserver)" ] && apiserver_ready; then
		echo "readyz: ok, $(url)"
	else
		echo "readyz: not ready"
		rc=1
	fi
	exit $rc
	;;
*)
	usage
	;;
esac
