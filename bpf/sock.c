// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* cgroup socket programs: socket-level translation for the node's own
 * (host-network) processes, whose connects and sends to a frontend no tc
 * hook can steer, and for its Pods' TCP connects, which then need no
 * per-packet work (lib/sock4.h). Attached to a cgroup v2 subtree by the
 * loader; they share every map with tc.c through the agent's pins. */

#include "lib/common.h"
#include "lib/sock4.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* TCP connect and UDP connect. */
SEC("cgroup/connect4")
int sluice_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx, false);
}

/* sendto/sendmsg of an unconnected UDP socket (a connected one's sends
 * do not come here: its connect was translated). */
SEC("cgroup/sendmsg4")
int sluice_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx, true);
}

/* recvfrom/recvmsg of a UDP socket: the source of a backend's reply. */
SEC("cgroup/recvmsg4")
int sluice_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}

/* getpeername of a translated socket, TCP or UDP. */
SEC("cgroup/getpeername4")
int sluice_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}
