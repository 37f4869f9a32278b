#!/usr/bin/env bash
# Runs the VM suites on every kernel of the matrix, prints the results as
# the README's "Supported kernels" table, and fails when a kernel fails or
# when the README's table says something else than this run found.
#
#   KERNELS="5.10 6.1 6.12" hack/vmtest/matrix.sh      (the default)
#   CHECK_README=0 KERNELS="bpo sid" hack/vmtest/matrix.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
KERNELS=${KERNELS:-5.10 6.1 6.12}
CHECK_README=${CHECK_README:-1}
out=$(mktemp -d /tmp/sluice-matrix.XXXXXX)
trap 'rm -rf "$out"' EXIT

# Each kernel's suites run as SHARDS, groups of test packages separated by
# ";", each in a VM of its own; the kernel passes when every shard does.
# VMs run JOBS at a time (default 2): each is one emulation thread (TCG),
# so on a machine without KVM two of them use two cores. Shards keep both
# cores busy to the end: three kernels whole would leave one core idle
# while the last ran alone. The longest shard (the end-to-end suite) of
# every kernel starts first. Each kernel's log is printed whole once all
# have ended.
JOBS=${JOBS:-2}
SHARDS=${SHARDS:-test;bpf control loader}
IFS=';' read -ra shards <<<"$SHARDS"
for i in "${!shards[@]}"; do
	for k in $KERNELS; do
		while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
		(
			start=$(date +%s)
			KERNEL=$k VMTEST_TESTS="${shards[$i]}" "$root/hack/vmtest/run.sh" >"$out/$k.$i.log" 2>&1
			echo $? >"$out/$k.$i.rc"
			echo $(($(date +%s) - start)) >"$out/$k.$i.secs"
		) &
	done
done
wait

# A kernel's log, exit status (its first failed shard's) and VM seconds.
for k in $KERNELS; do
	rc=0 secs=0
	for i in "${!shards[@]}"; do
		cat "$out/$k.$i.log" >>"$out/$k.log" 2>/dev/null
		r=$(cat "$out/$k.$i.rc" 2>/dev/null || echo 1)
		[ "$rc" = 0 ] && rc=$r
		secs=$((secs + $(cat "$out/$k.$i.secs" 2>/dev/null || echo 0)))
	done
	echo "$rc" >"$out/$k.rc"
	echo "$secs" >"$out/$k.secs"
done

failed=0
rows=()
times=()
for k in $KERNELS; do
	cat "$out/$k.log"
	rc=$(cat "$out/$k.rc" 2>/dev/null || echo 1)
	secs=$(cat "$out/$k.secs" 2>/dev/null || echo 0)
	pkgline=$(grep -ao 'vmtest: kernel package .*' "$out/$k.log" | head -1 | cut -d' ' -f4- | sed 's/ (cached)$//')
	feat=$(grep -ao 'sluice-kernel-features: .*' "$out/$k.log" | tail -1)
	attach=$(sed -n 's/.*attach=\([a-z]*\).*/\1/p' <<<"$feat")
	batch=$(sed -n 's/.*batch=\([a-z]*\).*/\1/p' <<<"$feat")
	case "$attach" in
	tcx) attach="TCX link" ;;
	tc) attach="clsact qdisc + cls_bpf filter" ;;
	*) attach="unknown" ;;
	esac
	case "$batch" in true) batch=yes ;; false) batch=no ;; *) batch=unknown ;; esac
	if [ "$rc" = 0 ]; then result=pass; else result="FAIL (exit $rc)"; failed=1; fi
	rows+=("| $k | \`$pkgline\` | $attach | $batch | full privileged suite in a VM | $result |")
	times+=("$k: ${secs}s ($result)")
done

table=$(
	echo "| kernel | Debian package | attach path | batch map ops | tested by | result |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
)
echo
echo "kernel matrix:"
echo "$table"
printf 'VM time %s\n' "${times[@]}"

if [ "$CHECK_README" = 1 ]; then
	readme=$(sed -n '/<!-- kernels:begin -->/,/<!-- kernels:end -->/p' "$root/README.md" | sed '1d;$d')
	if [ "$readme" != "$table" ]; then
		echo "README.md's Supported kernels table differs from what this run found:"
		diff <(echo "$readme") <(echo "$table")
		failed=1
	fi
fi
# Last, so that the end of a CI log says why: each failed kernel's own
# closing lines (its verdict, and an oops digest after a panic).
for k in $KERNELS; do
	rc=$(cat "$out/$k.rc" 2>/dev/null || echo 1)
	[ "$rc" = 0 ] && continue
	echo
	echo "kernel $k failed (exit $rc):"
	for i in "${!shards[@]}"; do
		[ "$(cat "$out/$k.$i.rc" 2>/dev/null || echo 1)" = 0 ] && continue
		echo "  shard \"${shards[$i]}\":"
		sed -n "/^vmtest: $k took/,\$p" "$out/$k.$i.log" | head -50
		grep -a -E '^(--- FAIL|FAIL|panic:)' "$out/$k.$i.log" | head -20
	done
done
exit $failed
