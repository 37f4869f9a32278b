#!/usr/bin/env bash
# Imports every image archive of OUTDIR (hack/cluster/images.sh) into the
# containerd at socket ADDRESS, namespace k8s.io (the one the kubelet's CRI
# uses), unpacked for its snapshotter; an archive whose every name is there
# already with the archive's digest is skipped. Lists the images at the end.
#
#   hack/cluster/import.sh /run/sluice-cluster/node1/containerd.sock /var/cache/sluice-images
#   SNAPSHOTTER=native hack/cluster/import.sh ...   (default: overlayfs)
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 ADDRESS OUTDIR" >&2; exit 2; }
address=$1 dir=$2
ctr=(ctr --address "$address" -n k8s.io)
snapshotter=${SNAPSHOTTER:-overlayfs}

shopt -s nullglob
archives=("$dir"/*.tar)
[ ${#archives[@]} -gt 0 ] || { echo "import: no archives in $dir" >&2; exit 1; }

# REF DIGEST of what is there.
present=$("${ctr[@]}" images ls | awk 'NR > 1 { print $1, $3 }')
for a in "${archives[@]}"; do
	idx=$(tar -xOf "$a" index.json) || { echo "import: $a: no index.json, not an OCI layout archive" >&2; exit 1; }
	digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$idx" | head -1 | cut -d'"' -f4)
	names=$(grep -o '"io.containerd.image.name":"[^"]*"' <<<"$idx" | cut -d'"' -f4)
	[ -n "$digest" ] && [ -n "$names" ] || { echo "import: $a: index.json names no image" >&2; exit 1; }
	todo=0
	for n in $names; do
		grep -qxF "$n $digest" <<<"$present" || todo=1
	done
	if [ $todo = 0 ]; then
		echo "import: $(basename "$a") present ($digest)" >&2
		continue
	fi
	"${ctr[@]}" images import --snapshotter "$snapshotter" "$a" >&2
done
"${ctr[@]}" images ls
