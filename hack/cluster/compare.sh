#!/usr/bin/env bash
# make cluster-compare: the same workloads on the same lab cluster with
# kube-proxy (nftables mode) and with sluice, in interleaved rounds, and the
# table of both, each row a median (test/cluster's BenchmarkProxy, plus the
# Service conformance run's time). The table goes to stdout and to
# $RUN/compare.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
RUN=${CLUSTER_RUN:-/run/sluice-cluster}
out=${COMPARE_DIR:-/var/cache/sluice-k8s/compare}
mkdir -p "$out"

./hack/cluster/cluster.sh down >/dev/null 2>&1 || true
[ "${CLUSTER_KEEP:-}" = 1 ] || trap './hack/cluster/cluster.sh down' EXIT
./hack/cluster/cluster.sh up
"$GO" test -tags cluster -c -o "$out/cluster.test" ./test/cluster/

# This machine's throughput moves by tens of percent from one minute to the
# next (two cores, shared with the lab's every process), more than the two
# proxies differ: one run of each would compare the moments, not the
# proxies. So the workloads run in ROUNDS rounds, the proxies interleaved
# in ABBA order (kube-proxy first in odd rounds, sluice first in even ones,
# so drift over the run favours neither), and each row is the median of a
# proxy's rounds. The conformance run, long and steady, runs once each.
ROUNDS=${COMPARE_ROUNDS:-5}

bench() {
	local proxy=$1 round=$2
	./hack/cluster/deploy.sh "$proxy"
	(cd test/cluster && CLUSTER_PROXY=$proxy CLUSTER_COMPARE_OUT="$out/$proxy.$round.txt" \
		"$out/cluster.test" -test.run '^$' -test.bench '^BenchmarkProxy$' -test.benchtime 1x -test.v) |
		tee "$out/$proxy-bench.$round.log" | grep -E 'compare_test|^(ok|FAIL|PASS)' | sed "s/^/[$proxy, round $round] /"
	grep -q '^PASS' "$out/$proxy-bench.$round.log" || { echo "benchmark with $proxy failed" >&2; exit 1; }
}

conformance() {
	local proxy=$1 t0 t1
	t0=$(date +%s.%N)
	(cd test/cluster && "$out/cluster.test" -test.run '^TestServiceConformance$' -test.v) >"$out/$proxy-e2e.log" 2>&1 ||
		{ tail -40 "$out/$proxy-e2e.log" >&2; echo "conformance with $proxy failed" >&2; exit 1; }
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "conformance_run_s %.1f\n", b - a }' >"$out/$proxy.conformance.txt"
}

rm -f "$out"/kube-proxy.*.txt "$out"/sluice.*.txt
for round in $(seq 1 "$ROUNDS"); do
	order="kube-proxy sluice"
	[ $((round % 2)) = 0 ] && order="sluice kube-proxy"
	for p in $order; do
		bench "$p" "$round"
		[ "$round" = "$ROUNDS" ] && conformance "$p"
		./hack/cluster/deploy.sh remove
	done
done

# A proxy's rows: the median of its rounds, key by key.
median() {
	local proxy=$1
	cat "$out/$proxy".[0-9]*.txt | sort -k1,1 -k2,2g | awk '
	function flush() { if (n) printf "%s %.2f\n", key, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }
	$1 != key { flush(); key = $1; n = 0 }
	{ v[++n] = $2 }
	END { flush() }'
	cat "$out/$proxy.conformance.txt"
}
for p in kube-proxy sluice; do
	median "$p" >"$out/$p.txt"
done

# In a round the two proxies ran one after the other, so the pair's
# comparison leaves out most of the machine's drift: a row's "rounds
# ahead" is in how many rounds sluice did better than kube-proxy, the
# check on a median ratio that the machine's noise alone could give.
# Rates are better higher; times, memory, CPU and losses lower; the
# direct-to-Pod baselines are no contest. Ties are counted apart.
higher=_per_s_ # the keys of rates, the rows where higher is better
for kp in "$out"/kube-proxy.[0-9]*.txt; do
	join <(sort "$kp") <(sort "$out/sluice.${kp#"$out"/kube-proxy.}")
done | awk -v higher="$higher" '
	$1 ~ /^dns_direct_/ { next }
	{ n[$1]++; same[$1] += $3 == $2 }
	$1 ~ higher { w[$1] += $3 > $2; next }
	{ w[$1] += $3 < $2 }
	END { for (k in n) printf "%s %d/%d%s\n", k, w[k], n[k], same[k] ? "," same[k] "_same" : "" }' >"$out/rounds.txt"

# Rows: a label per key; which way is better comes from the key.
{
	echo "| measure | kube-proxy (nftables) | sluice | sluice vs kube-proxy | rounds sluice ahead |"
	echo "|---|---:|---:|---:|---:|"
	join <(sort "$out/kube-proxy.txt") <(sort "$out/sluice.txt") | awk -v rounds="$out/rounds.txt" -v higher="$higher" '
	BEGIN { while ((getline l < rounds) > 0) { split(l, a, " "); gsub(",", ", ", a[2]); gsub("_", " ", a[2]); won[a[1]] = a[2] } }
	function row(label, kp, sl,   f, ratio, verdict, r) {
		f = (kp < 10 && sl < 10) ? "%.2f" : "%.1f"
		r = ($1 in won) ? won[$1] : "-"
		if (kp <= 0 || sl <= 0) { printf "| %s | " f " | " f " | - | %s |\n", label, kp, sl, r; return }
		ratio = $1 ~ higher ? sl / kp : kp / sl
		verdict = ratio > 1.005 ? "ahead" : (ratio < 0.995 ? "behind" : "same")
		printf "| %s | " f " | " f " | %.2fx %s | %s |\n", label, kp, sl, ratio, verdict, r
	}
	$1 == "clusterip_connects_per_s_c1" { row("Pod to ClusterIP, connects/s, c=1", $2, $3) }
	$1 == "clusterip_connects_per_s_c8" { row("Pod to ClusterIP, connects/s, c=8", $2, $3) }
	$1 == "nodeport_connects_per_s_c8" { row("external client to NodePort, connects/s, c=8", $2, $3) }
	$1 == "dns_queries_per_s_c8" { row("DNS through kube-dns (UDP), queries/s, c=8", $2, $3) }
	$1 == "dns_unanswered_percent" { printf "| DNS queries through kube-dns unanswered within 1 s, %% | %.2f | %.2f | %s | %s |\n", $2, $3, ($3 < $2 ? "ahead" : ($3 == $2 ? "same" : "behind")), (($1 in won) ? won[$1] : "-") }
	$1 == "dns_direct_queries_per_s_c8" { printf "| baseline, no Service: DNS to the CoreDNS Pods directly, queries/s, c=8 | %.1f | %.1f | - | - |\n", $2, $3 }
	$1 == "dns_direct_unanswered_percent" { printf "| baseline, no Service: DNS to the CoreDNS Pods directly, unanswered within 1 s, %% | %.2f | %.2f | - | - |\n", $2, $3 }
	$1 == "scale_to_traffic_s" { row("kubectl scale 1 to 4 until every new Pod answers, s", $2, $3) }
	$1 ~ /^rss_mib_/ { row("proxy memory (RSS) on " substr($1, 9) ", MiB", $2, $3) }
	$1 ~ /^cpu_percent_/ { row("proxy CPU on " substr($1, 13) " during the run, %", $2, $3) }
	$1 == "conformance_run_s" { row("15 Service conformance specs, s", $2, $3) }
	'
} | tee "$RUN/compare.md" "$out/compare.md"
