#!/usr/bin/env bash
# Runs sluice's privileged test suites inside a VM booted on a chosen kernel.
#
#   KERNEL=5.10|6.1|6.12|bpo|sid hack/vmtest/run.sh
#   KERNEL_IMAGE=/path/to/bzImage KERNEL_MODULES=/path/to/lib/modules/VER hack/vmtest/run.sh
#
# Kernels are Debian's cloud flavour, downloaded as .deb with a private apt
# configuration (the host's sources are never touched), unpacked, and cached
# under $SLUICE_VMTEST_CACHE. The guest is an initramfs of busybox, the
# modules the suites need and static test binaries; it needs nothing else.
#
# Exit status: the tests' own (0 or 1); 2 setup failed; 3 kernel panic;
# 4 timeout; 5 the VM stopped without a verdict.
set -euo pipefail

KERNEL=${KERNEL:-6.12}
CACHE=${SLUICE_VMTEST_CACHE:-/var/cache/sluice-vmtest}
# A hang guard, not a speed target: the suites take 5-15 min under TCG
# emulation, more on a loaded machine.
TIMEOUT=${VMTEST_TIMEOUT:-2400}
# Test packages to run (directories of the module); each becomes one binary.
TESTS=${VMTEST_TESTS:-bpf control loader test}
TEST_ARGS=${VMTEST_ARGS:-}
MEM=${VMTEST_MEM:-2048}

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/hack/vmtest"
die() { echo "vmtest: $*" >&2; exit 2; }

# Kernel table. Required kernels are pinned to exact package versions;
# bpo and sid are advisory and take whatever the archive has now.
case "$KERNEL" in
5.10) mirror=debian suite=bullseye pkg=linux-image-5.10.0-32-cloud-amd64 ver=5.10.223-1 ;;
6.1) mirror=debian-security suite=bookworm-security pkg=linux-image-6.1.0-56-cloud-amd64 ver=6.1.192-2 ;;
6.12) mirror=debian-security suite=trixie-security pkg=linux-image-6.12.117+deb13-cloud-amd64 ver=6.12.117-1 ;;
bpo) mirror=debian suite=trixie-backports pkg=linux-image-cloud-amd64 ver= ;;
sid) mirror=debian suite=sid pkg=linux-image-cloud-amd64 ver= ;;
*) [ -n "${KERNEL_IMAGE:-}" ] || die "unknown KERNEL=$KERNEL: use 5.10, 6.1, 6.12, bpo, sid or KERNEL_IMAGE=path" ;;
esac
[ -n "${KERNEL_IMAGE:-}" ] && KERNEL=custom

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx insmod && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
command -v file >/dev/null || need+=(file)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
	echo "vmtest: installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
busybox=$(command -v busybox)
file -L "$busybox" | grep -q 'statically linked' || die "$busybox is not static (install busybox-static)"

# fetch_kernel prints the directory of the unpacked package.
fetch_kernel() {
	local apt="$CACHE/apt" dir
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$CACHE/kernels"
	# One fetch at a time: the matrix starts VMs side by side, they share
	# apt's lists directory, and a second fetch of one kernel must wait for
	# the first and then find it cached. Held until this subshell ends.
	exec 9>"$CACHE/.fetch.lock"
	flock 9
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	[ -f "$keyring" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debian-archive-keyring >/dev/null
	echo "deb [signed-by=$keyring] http://deb.debian.org/$mirror $suite main" >"$apt/sources.list"
	local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
		-o APT::Architecture=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root
		-o Acquire::Retries=3)
	if [ -n "$ver" ]; then
		dir="$CACHE/kernels/${pkg}_$ver"
		if [ -f "$dir/.complete" ]; then
			echo "vmtest: kernel package $pkg $ver (cached)" >&2
			echo "$dir"
			return
		fi
	fi
	apt-get "${opts[@]}" -qq update >&2 || die "apt update of $suite failed"
	if [ -z "$ver" ]; then
		# Advisory kernels: follow the meta package to today's image.
		local real
		real=$(apt-cache "${opts[@]}" depends "$pkg" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
		[ -n "$real" ] || die "no kernel image behind $pkg in $suite"
		pkg=$real
		ver=$(apt-cache "${opts[@]}" policy "$pkg" | awk '/Candidate:/ {print $2}')
		dir="$CACHE/kernels/${pkg}_$ver"
		if [ -f "$dir/.complete" ]; then
			echo "vmtest: kernel package $pkg $ver (cached)" >&2
			echo "$dir"
			return
		fi
	fi
	echo "vmtest: kernel package $pkg $ver" >&2
	if ! apt-cache "${opts[@]}" madison "$pkg" | awk '{print $3}' | grep -qx -- "$ver"; then
		die "$pkg=$ver is no longer in Debian's $suite archive: update the pinned version in hack/vmtest/run.sh (available: $(apt-cache "${opts[@]}" madison "$pkg" | awk '{print $3}' | tr '\n' ' '))"
	fi
	rm -rf "$dir" && mkdir -p "$dir"
	# From 7.x the image is split: the kernel in linux-binary-*, the
	# modules in linux-modules-*, same version.
	local parts=("$pkg=$ver") p
	for p in $(apt-cache "${opts[@]}" depends "$pkg" | awk '/Depends: linux-(binary|modules)-[0-9]/ {print $2}'); do
		parts+=("$p=$ver")
	done
	(cd "$dir" && apt-get "${opts[@]}" -qq download "${parts[@]}" >&2) || die "download of ${parts[*]} failed"
	for p in "$dir"/*.deb; do
		dpkg-deb -x "$p" "$dir/root"
	done
	rm -f "$dir"/*.deb
	# The package's modules.dep is made by depmod when it is installed;
	# make it here (merged-/usr packages keep modules under usr/lib).
	local kver
	for d in "$dir"/root/usr/lib/modules/* "$dir"/root/lib/modules/*; do
		[ -d "$d/kernel" ] || continue
		kver=$(basename "$d")
		if [ ! -d "$dir/root/lib/modules/$kver" ]; then
			mkdir -p "$dir/root/lib/modules"
			ln -s "../../usr/lib/modules/$kver" "$dir/root/lib/modules/$kver"
		fi
		depmod -b "$dir/root" "$kver" 2>/dev/null || die "depmod for $kver failed"
	done
	touch "$dir/.complete"
	echo "$dir"
}

work=$(mktemp -d /tmp/sluice-vmtest.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ "$KERNEL" = custom ]; then
	vmlinuz=$KERNEL_IMAGE
	moddir=${KERNEL_MODULES:-}
else
	kdir=$(fetch_kernel)
	vmlinuz= moddir=
	# 7.x packages keep vmlinuz under lib/modules.
	for f in "$kdir"/root/boot/vmlinuz-* "$kdir"/root/usr/lib/modules/*/vmlinuz "$kdir"/root/lib/modules/*/vmlinuz; do
		[ -f "$f" ] && { vmlinuz=$f; break; }
	done
	for d in "$kdir"/root/lib/modules/* "$kdir"/root/usr/lib/modules/*; do
		[ -f "$d/modules.dep" ] && { moddir=$d; break; }
	done
fi
[ -f "$vmlinuz" ] || die "no kernel image found"

# Modules the suites need, with their dependencies, in load order.
mkdir -p "$work/initrd/modules" "$work/initrd/bin" "$work/initrd/tests" "$work/initrd/etc"
: >"$work/initrd/modules/order"
if [ -n "$moddir" ] && [ -f "$moddir/modules.dep" ]; then
	declare -A loaded=()
	add_module() { # $1: path relative to $moddir, as modules.dep names it
		local rel=$1 dep
		[ -n "${loaded[$rel]:-}" ] && return
		loaded[$rel]=1
		for dep in $(awk -F': *' -v m="$rel" '$1 == m {print $2}' "$moddir/modules.dep"); do
			add_module "$dep"
		done
		local base; base=$(basename "$rel")
		case "$base" in
		*.ko.xz) xz -dc "$moddir/$rel" >"$work/initrd/modules/${base%.xz}"; base=${base%.xz} ;;
		*.ko.zst) zstd -qdc "$moddir/$rel" >"$work/initrd/modules/${base%.zst}"; base=${base%.zst} ;;
		*) cp "$moddir/$rel" "$work/initrd/modules/$base" ;;
		esac
		echo "$base" >>"$work/initrd/modules/order"
	}
	for m in veth sch_ingress cls_bpf bridge tun bonding 8021q; do
		rel=$(awk -F: -v m="$m" '{n=$1; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); if (n == m) {print $1; exit}}' "$moddir/modules.dep")
		# Built into this kernel when modules.dep does not list it.
		[ -n "$rel" ] && add_module "$rel"
	done
fi

ACCEL=tcg
if [ -w /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; fi
accel="tcg,thread=single"
[ "$ACCEL" = kvm ] && accel=kvm

# Static test binaries: they run unchanged in the guest.
for t in $TESTS; do
	mkdir -p "$work/initrd/tests/$t"
	(cd "$root" && CGO_ENABLED=0 go test -c -o "$work/initrd/tests/$t/$t.test" "./$t/") || die "build of ./$t/ tests failed"
done
cp "$busybox" "$work/initrd/bin/busybox"
cp "$here/init" "$work/initrd/init"
{
	echo "SLUICE_VMTEST_TESTS='$TESTS'"
	echo "SLUICE_VMTEST_ARGS='$TEST_ARGS'"
	echo "SLUICE_VMTEST_KERNEL='$KERNEL'"
	echo "SLUICE_VMTEST_ACCEL='$ACCEL'"
	echo "export SLUICE_VMTEST_KERNEL"
} >"$work/initrd/vmtest.env"
mkdir -p "$work/initrd"/{proc,sys,dev,tmp,run,var}
ln -s /run "$work/initrd/var/run"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
echo "vmtest: booting $(basename "$vmlinuz") ($KERNEL) with $accel, tests: $TESTS"
# oops_digest prints the few lines of a kernel oops that say where it
# happened: what was detected, the task and the suite running, the faulting
# instruction and the call trace's function names. The whole console scrolls
# by in CI; this is what the end of the log keeps.
oops_digest() {
	local log=$1
	echo "vmtest: the oops, in short (whole console above):"
	grep -a 'sluice-vmtest: === ' "$log" | tail -1 | sed 's/^/vmtest:   running /' || true
	sed -n '/BUG:\|Oops\|general protection fault\|kernel BUG\|WARNING:\|Unable to handle/,/Kernel panic/p' "$log" |
		grep -a -E 'BUG:|Oops|general protection|kernel BUG|WARNING:|Unable to handle|CPU: |Comm:|RIP: |^\[ *[0-9.]+\]  ([a-z_0-9.]+\+0x|<IRQ>|<TASK>|\? )|Kernel panic' |
		grep -av '^\[ *[0-9.]*\]  ? ' | head -40 | sed 's/^/vmtest:   /' || true
}

start=$(date +%s)
set +e
timeout --foreground "$TIMEOUT" qemu-system-x86_64 \
	-machine pc -accel "$accel" -cpu max -smp 2 -m "$MEM" \
	-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 mitigations=off" \
	-display none -serial stdio -monitor none -no-reboot -nodefaults \
	2>&1 | tee "$work/console.log"
status=${PIPESTATUS[0]}
set -e
echo "vmtest: $KERNEL took $(( $(date +%s) - start ))s"
if grep -q 'Kernel panic' "$work/console.log"; then
	echo "vmtest: kernel panic"
	oops_digest "$work/console.log"
	exit 3
fi
if [ "$status" = 124 ]; then
	echo "vmtest: timed out after ${TIMEOUT}s"; exit 4
fi
verdict=$(grep -ao 'sluice-vmtest: exit=[0-9]*' "$work/console.log" | tail -1 | cut -d= -f2)
[ -n "$verdict" ] || { echo "vmtest: the VM stopped without a verdict"; exit 5; }
exit "$verdict"
