#!/usr/bin/env bash
# Builds the container images the offline cluster runs, as OCI layout
# archives (hack/cluster/ociimage), without Docker or a registry, into
# OUTDIR (a cache outside the checkout); hack/cluster/import.sh loads them
# into a node's containerd.
#
#   hack/cluster/images.sh OUTDIR
#   BIN=/var/cache/sluice-k8s/.../bin IMAGES_ALLOW_MISSING=1 hack/cluster/images.sh OUTDIR
#
# BIN is the cluster binaries' dir (agnhost, coredns); by default what
# hack/cluster/binaries.sh prints, which builds what is missing first. An
# image whose binary is not there fails the run, or with
# IMAGES_ALLOW_MISSING=1 is skipped with a message.
#
# Each image is OUTDIR/NAME.tar, beside NAME.inputs (a hash of everything it
# is made of: this script, the tool's sources, its arguments, the contents
# of its files) and NAME.digest (the manifest's digest, which containerd
# reports); an image whose inputs did not change is not written again.
set -euo pipefail
umask 022

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
BUSYBOX=${BUSYBOX:-/bin/busybox}
CURL=${CURL:-/usr/bin/curl}
NC=${NC:-/bin/nc.openbsd}
WGET=${WGET:-/usr/bin/wget}
DASH=${DASH:-/bin/dash}
mkdir -p "$1"
out=$(cd "$1" && pwd)
case "$out/" in "$repo"/*) echo "images: OUTDIR $out is inside the checkout" >&2; exit 2 ;; esac
BIN=${BIN:-$("$here/binaries.sh")}

work=$(mktemp -d /tmp/sluice-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && "$GO" build -o "$work/ociimage" ./hack/cluster/ociimage)
(cd "$repo" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w" -o "$work/pause" ./hack/cluster/pause)
make -s -C "$repo" build
version=$(make -s -C "$repo" version)

failed=()
# have FILE...: true if every file is there, executable; else removes the
# image's archive, says why it goes without, and marks the run failed
# unless IMAGES_ALLOW_MISSING=1.
have() {
	local f why
	for f in "$@"; do
		if [ -f "$f" ] && [ -x "$f" ]; then
			continue
		elif [ -e "$f" ]; then
			why="is not an executable file"
		else
			why="is missing"
		fi
		# An archive of earlier inputs would be imported as if current.
		rm -f "$out/$name".{tar,digest,inputs}
		if [ "${IMAGES_ALLOW_MISSING:-0}" = 1 ]; then
			echo "images: skipping $name: $f $why" >&2
		else
			echo "images: $name: $f $why (IMAGES_ALLOW_MISSING=1 skips it)" >&2
			failed+=("$name")
		fi
		return 1
	done
}

# inputs ARGS...: what an image is made of, for its .inputs hash.
inputs() {
	cat "$0" "$repo"/hack/cluster/ociimage/*.go
	printf '%s\n' "${@//$work/WORK}"
	local prev="" a src
	for a in "$@"; do
		if [ "$prev" = -file ]; then
			src=${a%%=*}
			if [ -d "$src" ]; then
				(cd "$src" && find . -printf '%p %m %l\n' | LC_ALL=C sort &&
					find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
			else
				sha256sum <"$src"
			fi
		fi
		prev=$a
	done
}

# image NAME OCIIMAGE-ARGS...: writes OUTDIR/NAME.tar unless its inputs are
# those it was written from.
image() {
	local name=$1 sum
	shift
	sum=$(inputs "$@" | sha256sum | cut -d' ' -f1)
	if [ -f "$out/$name.tar" ] && [ -f "$out/$name.digest" ] && [ "$(cat "$out/$name.inputs" 2>/dev/null)" = "$sum" ]; then
		echo "images: $name unchanged ($(cat "$out/$name.digest"))" >&2
		return
	fi
	rm -f "$out/$name.inputs"
	"$work/ociimage" -o "$out/$name.tar" "$@" >"$out/$name.digest"
	echo "$sum" >"$out/$name.inputs"
	echo "images: $name written ($(cat "$out/$name.digest"), $(du -h "$out/$name.tar" | cut -f1))" >&2
}

# etc DIR [PASSWD-LINE GROUP-LINE]: a root/nobody /etc in DIR, hosts looked
# up in /etc/hosts then DNS (/etc/resolv.conf, which the kubelet mounts).
etc() {
	mkdir -p "$1"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n%s' "${2:-}" >"$1/passwd"
	printf 'root:x:0:\nnobody:x:65534:\n%s' "${3:-}" >"$1/group"
	printf 'hosts: files dns\npasswd: files\ngroup: files\n' >"$1/nsswitch.conf"
}

# The busybox binary and a symlink for each of its applets in /bin.
busybox_args=(-file "$BUSYBOX=/bin/busybox:0755")
for a in $("$BUSYBOX" --list); do
	[ "$a" = busybox ] || busybox_args+=(-symlink "/bin/$a=busybox")
done
# A directory tree of the usual empty ones.
fs_args=(-dir /tmp:1777 -dir /root:0700 -dir /home -dir /var/tmp:1777)

# dynamic SRC DST: ociimage arguments for a dynamic binary at DST, with the
# libraries and the loader ldd names, at their paths.
dynamic() {
	local lib
	printf '%s\n' -file "$1=$2:0755"
	for lib in $(ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p'); do
		printf '%s\n' -file "$lib=$lib"
	done
}
mapfile -t curl_args < <(dynamic "$CURL" /usr/bin/curl)
# The netcat e2e tests run in agnhost pods (nc -v -t|-u -w 2), which
# busybox's has not: OpenBSD's, as agnhost's own image has.
# Debian's static busybox runs its own applet for any command its shell is
# given (a standalone shell), whatever PATH says: agnhost's /bin/sh is
# dash, and its busybox has no nc or sh applet links.
mapfile -t nc_args < <(dynamic "$NC" /usr/bin/nc)
mapfile -t sh_args < <(dynamic "$DASH" /bin/sh)
# The e2e tests' `wget -q -O - -T 1` (verifyServeHostnameServiceUp): GNU
# wget, as Debian's busybox wget crashes on -T. The tests' timings assume
# one try per wget, as busybox's makes (GNU wget's default is 20, with
# backoff: 150 of them to a VIP that is down run for hours).
mapfile -t wget_args < <(dynamic "$WGET" /usr/bin/wget)
agnhost_busybox_args=(-file "$BUSYBOX=/bin/busybox:0755")
for a in $("$BUSYBOX" --list); do
	case $a in busybox | sh | nc | wget) ;; *) agnhost_busybox_args+=(-symlink "/bin/$a=busybox") ;; esac
done

etc "$work/etc"
etc "$work/agnhost-etc" 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh
' 'user-defined-in-image:x:1000:
group-defined-in-image:x:50000:user-defined-in-image
'
printf 'tries = 1\n' >"$work/agnhost-etc/wgetrc"

name=pause
image pause -tag registry.k8s.io/pause:3.10.2 -file "$work/pause=/pause:0755" \
	-user 65535:65535 -entrypoint '["/pause"]'

# agnhost as its e2e image has it: /agnhost and /agnhost-2, the porter's
# certificate in /, /uploads for netexec, the users the SupplementalGroups
# test expects, the ports it declares; and a shell with busybox's applets
# and curl, which e2e tests exec in agnhost pods.
name=agnhost
porter=$("$GO" env GOMODCACHE)/k8s.io/kubernetes@${K8S_VERSION:-v1.37.2}/test/images/agnhost/porter
porter_args=()
for f in localhost.crt localhost.key; do
	[ -f "$porter/$f" ] && porter_args+=(-file "$porter/$f=/$f:0644")
done
if have "$BIN/agnhost"; then
	image agnhost -tag registry.k8s.io/e2e-test-images/agnhost:2.66.1 -tag registry.k8s.io/e2e-test-images/agnhost:2.55 \
		-file "$BIN/agnhost=/agnhost:0755" -symlink /agnhost-2=agnhost "${porter_args[@]}" \
		-dir /uploads "${agnhost_busybox_args[@]}" "${curl_args[@]}" "${nc_args[@]}" "${wget_args[@]}" "${sh_args[@]}" "${fs_args[@]}" -file "$work/agnhost-etc=/etc" \
		-expose 80/tcp -expose 8080/tcp -expose 8081/tcp -expose 9376/tcp -expose 5000/tcp \
		-entrypoint '["/agnhost"]' -cmd '["pause"]'
fi

name=busybox
image busybox -tag registry.k8s.io/e2e-test-images/busybox:1.37.0-2 -tag docker.io/library/busybox:1.37.0 \
	"${busybox_args[@]}" "${fs_args[@]}" -file "$work/etc=/etc" -cmd '["sh"]'

# The lab's client: busybox's applets (sh, nslookup, wget, nc, sleep) and
# curl; it sleeps unless told otherwise, as the tutorials' sleep image. Debian's busybox crashes on `wget -T`: use `timeout 5 wget ...`.
name=tools
image tools -tag sluice.local/tools:1 \
	"${busybox_args[@]}" "${curl_args[@]}" "${fs_args[@]}" -file "$work/etc=/etc" -cmd '["sleep","infinity"]'

# As CoreDNS's image, but run as root: the lab's manifest grants only
# NET_BIND_SERVICE, which a non-root user would need as a file capability.
name=coredns
if have "$BIN/coredns"; then
	image coredns -tag registry.k8s.io/coredns/coredns:v1.14.7 -file "$BIN/coredns=/coredns:0755" \
		-file "$work/etc=/etc" -dir /tmp:1777 -expose 53/tcp -expose 53/udp -entrypoint '["/coredns"]'
fi

# As the Dockerfile's: the static binary alone, no shell.
name=sluice
image sluice -tag "ghcr.io/sluice-lb/sluice:$version" -file "$repo/bin/sluice=/sluice:0755" \
	-file "$work/etc=/etc" -dir /tmp:1777 -entrypoint '["/sluice"]'
name=whoami
image whoami -tag sluice.local/whoami:1 -file "$repo/bin/sluice=/sluice:0755" \
	-file "$work/etc=/etc" -dir /tmp:1777 -expose 80/tcp -expose 80/udp \
	-entrypoint '["/sluice","whoami","--listen",":80"]'

if [ ${#failed[@]} -gt 0 ]; then
	echo "images: not built: ${failed[*]}" >&2
	exit 1
fi
echo "$out"
