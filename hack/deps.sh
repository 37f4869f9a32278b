#!/usr/bin/env bash
# Installs what building, testing and running the lab need, and nothing
# that is already there. Debian/Ubuntu, as root.
set -euo pipefail

CLANG=${CLANG:-clang-19}
need=()
command -v "$CLANG" >/dev/null || need+=("$CLANG")
command -v "llvm-strip-${CLANG#clang-}" >/dev/null || need+=("llvm-${CLANG#clang-}")
command -v bpftool >/dev/null || need+=(bpftool)
command -v ip >/dev/null || need+=(iproute2)
command -v git >/dev/null || need+=(git)
command -v nft >/dev/null || need+=(nftables) # the e2e tests next to a stateful firewall
# The lab cluster (hack/cluster/): a container runtime, the CNI plugins,
# the busybox and curl of its tools image, certificates.
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx nslookup || need+=(busybox-static)
command -v curl >/dev/null || need+=(curl)
[ -x /bin/nc.openbsd ] || need+=(netcat-openbsd)
[ -x /usr/bin/wget ] || need+=(wget)
command -v openssl >/dev/null || need+=(openssl)
command -v nsenter >/dev/null || need+=(util-linux)
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || need+=(golang-go)

if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o Acquire::Retries=3 update -qq
	apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The kernel's bpf filesystem, where the agent pins its maps.
if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi
