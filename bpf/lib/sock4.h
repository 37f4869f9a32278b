/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Socket-level translation for the node's own sockets, and for its Pods'
 * TCP connects (bpf/sock.c).
 *
 * A host-network process's packets to a frontend leave the node without
 * ever crossing a tc ingress hook, so the packet datapath cannot translate
 * them. These programs run at the socket calls instead, on a cgroup v2
 * subtree: connect (TCP, connected UDP) and sendmsg (unconnected UDP)
 * rewrite the destination from the frontend to a backend, chosen as the
 * tc program chooses one for a new flow from the node's own address;
 * recvmsg (UDP replies) and getpeername show the frontend again, from
 * lb4_sock_revnat. The kernel then routes the socket to the backend
 * directly: no conntrack entry, no packet rewrite, the node's address as
 * the source (rule 24's SNAT, for free).
 *
 * A Pod's TCP connect, when sock_pods is set, is translated the same way:
 * its packets then go to the backend as they left the Pod, with no
 * per-packet lookup, rewrite or flow entry. What needs the Pod's address,
 * which a connect does not show (session affinity, source ranges), and
 * the Pod's UDP (a connected socket would keep a departed backend for
 * good) stay the packet datapath's. */
#ifndef __SLUICE_SOCK4_H
#define __SLUICE_SOCK4_H

#include "common.h"
#include "maps.h"
#include "counters.h"
#include "filter.h"
#include "affinity.h"
#include "lb4.h"

#define EPERM 1
#define ECONNREFUSED 111

/* sock_addr verdicts: 1 lets the call go on, 0 fails it (EPERM unless
 * the program set another error). */
#define SOCK_ALLOW 1
#define SOCK_DENY 0

/* Set by the loader (loader/sock.go) when the kernel has bpf_set_retval
 * for these programs (5.18+): a refused connect then fails with
 * ECONNREFUSED, as a pod's does on REJECT's ICMP port unreachable. On
 * older kernels a refusal can only be EPERM; it still fails at once and
 * never lets the connect leak out towards the frontend's address, where
 * nothing would answer. */
volatile const __u8 sock_set_retval = 0;

/* Set by the loader: the cookie of the node's network namespace (the
 * agent's), so that a socket of a Pod, whose cgroup is under the same
 * subtree, is told from the node's: only its TCP connects may be
 * translated (sock_pods), the rest is the packet datapath's, which judges
 * it by the Pod's address. 0: the kernel cannot tell the agent its
 * namespace's cookie (SO_NETNS_COOKIE is 5.14+); every socket of the
 * subtree is then translated as the node's. */
volatile const __u64 sock_host_netns = 0;

/* Set by the loader unless the agent serves the node's namespace only
 * (--socket-lb-host-only, for service meshes that steer a Pod's traffic
 * by the Service address): the TCP connects of the subtree's other
 * namespaces, the Pods', are translated too. */
volatile const __u8 sock_pods = 0;

/* Not a reason: "the destination is no frontend, leave the call alone". */
#define SOCK4_NOT_SERVICE 0

__inline bool sock4_is_host(struct bpf_sock_addr *ctx)
{
	return !sock_host_netns || bpf_get_netns_cookie(ctx) == sock_host_netns;
}

__inline bool sock4_is_loopback(__be32 addr)
{
	return (addr & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
}

/* user_port is read with a 4-byte load, the one every kernel accepts
 * (narrow loads of it are newer). Network byte order in the low half. */
__inline __be16 sock4_user_port(const struct bpf_sock_addr *ctx)
{
	return (__be16)(*(volatile __u32 *)&ctx->user_port);
}

__inline int sock4_refuse(__u32 reason)
{
	count_bytes(reason, 0);
	if (sock_set_retval && reason == REASON_SOCK_REJECT)
		bpf_set_retval(-ECONNREFUSED);
	return SOCK_DENY;
}

/* The backend an unconnected UDP socket already sends this frontend's
 * datagrams to, while that backend still holds its id. */
__inline struct lb4_backend *sock4_sticky(const struct lb4_sock_backend_key *k, __u32 *backend_id)
{
	struct lb4_sock_backend *sb = bpf_map_lookup_elem(&lb4_sock_backend, k);

	if (!sb || !lb4_backend_matches(sb->backend_id, sb->address, sb->port))
		return NULL;
	*backend_id = sb->backend_id;
	return bpf_map_lookup_elem(&lb4_backends, backend_id);
}

/* The frontend's backend for a new connection of the node itself, as
 * lb4_service picks one for a new flow from the node's address: source
 * ranges (rule 21) and session affinity (rule 22) judged with that
 * address, the internal scope of a two-scope frontend (rule 13: the
 * node's own traffic uses the Cluster set). For a Pod's connect (pod),
 * the same but for a master with source ranges or affinity, which is
 * left to the packet datapath: it judges them by the Pod's address.
 * Returns 0 and *bep, else the refusal reason, or SOCK4_NOT_SERVICE. */
__inline __u32 sock4_select(struct lb4_key *key, const struct datapath_config *cfg, bool pod,
			    const struct lb4_sock_backend_key *sk, struct lb4_backend **bep,
			    __u32 *backend_id, __u32 *rev_nat_id)
{
	struct lb4_service *svc = bpf_map_lookup_elem(&lb4_services, key);

	__be32 node = cfg ? cfg->node_addr4 : 0;
	if (!svc) {
		/* An active service IP on a port it does not serve is
		 * refused (rule 17), not sent out unanswered. The node's own
		 * addresses, which carry NodePorts, never are: the node's
		 * other services (sshd, the kubelet) listen on them. */
		if (key->address == node || sock4_is_loopback(key->address))
			return SOCK4_NOT_SERVICE;
		return lb4_is_service_ip(key->address) ? REASON_SOCK_REJECT : SOCK4_NOT_SERVICE;
	}
	if (pod && (svc->flags & SVC_F_SOURCE_RANGES))
		return SOCK4_NOT_SERVICE;
	if ((svc->flags & SVC_F_SOURCE_RANGES) && !lb4_source_allowed(svc->rev_nat_id, node))
		return REASON_SOCK_DROP;
	/* The node and its Pods are internal sources. */
	svc = lb4_scope_of(key, svc, true);
	__u8 flags = svc->flags;
	if (pod && (flags & SVC_F_AFFINITY))
		return SOCK4_NOT_SERVICE;
	*rev_nat_id = svc->rev_nat_id;
	if (svc->count == 0)
		/* Rule 14: a REJECT refuses, a DROP fails the call too (a
		 * socket gains nothing from waiting for a timeout). */
		return flags & SVC_F_DROP_EMPTY ? REASON_SOCK_DROP : REASON_SOCK_REJECT;

	if (sk) {
		*bep = sock4_sticky(sk, backend_id);
		if (*bep)
			return 0;
	}

	struct lb4_choice c = {};
	struct lb4_backend *be = lb4_choose(key, svc, node, backend_id, &c);
	if (!be)
		return REASON_SOCK_DROP;
	lb4_choice_record(0, &c, *backend_id);
	if (sk) {
		struct lb4_sock_backend sb = {
			.backend_id = *backend_id,
			.address = be->address,
			.port = be->port,
		};
		/* Lost, the next datagram picks again: no worse than a
		 * pod's UDP flow whose conntrack entry expired. */
		map_update(&lb4_sock_backend, sk, &sb, BPF_ANY);
	}
	*bep = be;
	return 0;
}

/* Whether a socket call is this datapath's: any of the node's own, and a
 * Pod's TCP ones when sock_pods is set (never to the Pod's own loopback,
 * which no NodePort on the node's 127.0.0.1 is). *pod: it is a Pod's. */
__inline bool sock4_serves(struct bpf_sock_addr *ctx, __u32 proto, __be32 addr, bool *pod)
{
	*pod = !sock4_is_host(ctx);
	return !*pod || (sock_pods && proto == IPPROTO_TCP && !sock4_is_loopback(addr));
}

/* connect4 (udp_sendmsg: false) and sendmsg4 (true): a call of the node's
 * own TCP or UDP socket, or of a Pod's TCP one, to a frontend goes to a
 * backend instead. */
__inline int sock4_forward(struct bpf_sock_addr *ctx, bool udp_sendmsg)
{
	__u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_ALLOW;

	__be32 daddr = ctx->user_ip4;
	__be16 dport = sock4_user_port(ctx);
	__u32 zero = 0;
	/* Every connect of the node passes here: most leave after the
	 * prefilter's one inlined lookup, as packets do. */
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);
	if (f && !lb4_filter_has(f, lb4_filter_dst(daddr)))
		return SOCK_ALLOW;
	bool pod;
	if (!sock4_serves(ctx, proto, daddr, &pod))
		return SOCK_ALLOW;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct lb4_sock_backend_key sk = { .cookie = cookie, .address = daddr, .port = dport };
	struct lb4_key key = { .address = daddr, .dport = dport, .proto = proto };
	struct lb4_backend *be = NULL;
	__u32 backend_id = 0, rev_nat_id = 0;

	__u32 reason = sock4_select(&key, dp_config(), pod, udp_sendmsg ? &sk : NULL, &be, &backend_id,
				    &rev_nat_id);
	if (reason != 0)
		return sock4_refuse(reason);
	if (!be)
		return SOCK_ALLOW; /* SOCK4_NOT_SERVICE */

	__be32 be_addr = be->address;
	__be16 be_port = be->port;
	struct lb4_sock_revnat_key rk = { .cookie = cookie, .address = be_addr, .port = be_port };
	struct lb4_sock_revnat_entry *old = bpf_map_lookup_elem(&lb4_sock_revnat, &rk);
	if (!old || old->address != daddr || old->port != dport || old->rev_nat_id != rev_nat_id) {
		struct lb4_sock_revnat_entry rn = {
			.address = daddr,
			.port = dport,
			.rev_nat_id = rev_nat_id,
		};
		if (map_update(&lb4_sock_revnat, &rk, &rn, BPF_ANY))
			count_bytes(REASON_SOCK_REVNAT_FAILED, 0);
	}
	ctx->user_ip4 = be_addr;
	ctx->user_port = (__u32)be_port;
	count_bytes(udp_sendmsg ? REASON_SOCK_SENDMSG : REASON_SOCK_CONNECT, 0);
	return SOCK_ALLOW;
}

/* recvmsg4 (a UDP datagram's source) and getpeername4 (a connected
 * socket's peer): a backend this socket was sent to shows as the frontend
 * the application used. These hooks must let the call go on. */
__inline int sock4_reverse(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_ALLOW;
	__be32 addr = ctx->user_ip4;
	__be16 port = sock4_user_port(ctx);
	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);
	if (f && !lb4_filter_has(f, lb4_filter_src(addr, port, proto)))
		return SOCK_ALLOW;
	bool pod;
	if (!sock4_serves(ctx, proto, addr, &pod))
		return SOCK_ALLOW;

	struct lb4_sock_revnat_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = addr,
		.port = port,
	};
	struct lb4_sock_revnat_entry *rn = bpf_map_lookup_elem(&lb4_sock_revnat, &rk);
	if (!rn)
		return SOCK_ALLOW;
	ctx->user_ip4 = rn->address;
	ctx->user_port = (__u32)rn->port;
	count_bytes(REASON_SOCK_REPLY, 0);
	return SOCK_ALLOW;
}

#endif
