/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Source NAT of service flows to the node's address (rules 13, 24-27): a
 * flow from an external client to a backend on another node, or a hairpin
 * flow whose backend is its own client, leaves with the node's address and
 * a port allocated here, so that its replies come back to this node (and,
 * for hairpin, through the datapath at all). Its two conntrack entries
 * carry what the translation needs (struct ct4_entry's nat_addr and
 * nat_port): the forward entry the node's address and port, the reply
 * entry, keyed by backend -> node address and port, the client's own. */
#ifndef __SLUICE_SNAT4_H
#define __SLUICE_SNAT4_H

#include "common.h"
#include "maps.h"
#include "conntrack.h"

/* Ports tried for one new flow before it is dropped as exhausted. Each try
 * costs a socket lookup and a conntrack insert; a range half full fails
 * 16 tries once in 65536, one 90% full once in 6. */
#define SNAT_TRIES 16

__inline struct datapath_config *dp_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sluice_config, &zero);
}

/* The SNAT port range, inclusive, host order: the agent's, else the
 * default. */
__inline void snat4_range(const struct datapath_config *cfg, __u32 *lo, __u32 *hi)
{
	*lo = cfg->snat_port_min ? cfg->snat_port_min : SNAT_DEFAULT_PORT_MIN;
	*hi = cfg->snat_port_max ? cfg->snat_port_max : SNAT_DEFAULT_PORT_MAX;
	if (*hi < *lo)
		*hi = *lo;
}

/* Whether a socket of the node's own would receive a packet from the
 * backend to the node's address and port: an established connection of
 * the node to that backend from that port, or a listener on it. Its
 * packets must not be taken for a SNATed flow's replies. */
__inline bool snat4_port_owned(struct __sk_buff *skb, __u8 proto, __be32 be_addr, __be16 be_port,
			       __be32 node_addr, __be16 port)
{
	struct bpf_sock_tuple t = {
		.ipv4 = { .saddr = be_addr, .daddr = node_addr, .sport = be_port, .dport = port },
	};
	struct bpf_sock *sk;

	if (proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return false;
	bpf_sk_release(sk);
	return true;
}

/* Whether the SNAT flow holding a port (its reply entry old, keyed rk) may
 * give it up to a new flow: it is dead (both entries expired), or a RST
 * ended it, after which neither side sends on it. Its forward entry goes
 * first, so that no packet of the old flow is translated to the port once
 * the new flow holds it. */
__inline bool snat4_reclaim(const struct ct4_key *rk, const struct ct4_entry *old, __u32 now)
{
	struct ct4_key fk;

	if (old->kind != CT_REPLY || !(old->flags & CT_F_SNAT))
		return false;
	struct ct4_entry *fe = ct4_forward_of_reply(rk, old, &fk);
	bool dead = old->expires < now && (!fe || fe->expires < now);
	bool reset = (old->flags & CT_F_RST) || (fe && (fe->flags & CT_F_RST));
	if (!dead && !reset)
		return false;
	if (fe && fe->nat_port == rk->dport && fe->nat_addr == rk->daddr)
		map_delete(&ct4_v3, &fk);
	map_delete(&ct4_v3, rk);
	return true;
}

/* Writes rev at rk in place of a reclaimable flow's entries; -EEXIST when
 * the flow there is live, or another CPU's new flow took the port first
 * (the insert is BPF_NOEXIST). */
__inline int snat4_take_over(const struct ct4_key *rk, struct ct4_entry *rev, __u32 now)
{
	struct ct4_entry *old = ct4_lookup(rk);

	if (!old || !snat4_reclaim(rk, old, now))
		return -EEXIST;
	return map_update(&ct4_v3, rk, rev, BPF_NOEXIST);
}

/* Writes a SNAT flow's reply entry under a free port of the range and
 * returns the port (network order), or 0 when none of SNAT_TRIES ports
 * was free; *err is the conntrack's error when the table refused. A port
 * is free when no live conntrack entry holds backend -> node:port
 * (another flow's replies) and no socket of the node would take those
 * packets. Each try is a port drawn at random: probing consecutive ports
 * would meet the runs of taken ports that consecutive allocation builds.
 * The insert is BPF_NOEXIST, so of two CPUs wanting one port one wins
 * and the other tries on. */
__inline __be16 snat4_alloc(struct __sk_buff *skb, const struct pkt4 *p,
			    const struct datapath_config *cfg, const struct lb4_backend *be,
			    struct ct4_entry *rev, __u32 now, int *err)
{
	__u32 lo, hi;
	struct ct4_key rk = {
		.saddr = be->address,
		.daddr = cfg->node_addr4,
		.sport = be->port,
		.proto = p->proto,
	};

	*err = 0;
	snat4_range(cfg, &lo, &hi);
	__u32 n = hi - lo + 1;
	for (int i = 0; i < SNAT_TRIES; i++) {
		__u32 off = ((__u64)bpf_get_prandom_u32() * n) >> 32;
		__be16 port = bpf_htons((__u16)(lo + off));
		if (snat4_port_owned(skb, p->proto, be->address, be->port, cfg->node_addr4, port))
			continue;
		rk.dport = port;
		int e = map_update(&ct4_v3, &rk, rev, BPF_NOEXIST);
		/* The first ports tried may be held by a flow that is over
		 * (dead, or ended by a RST) and not collected yet: under a
		 * storm of short connections most of the range is, so it is
		 * reclaimed at once. Only the first two (the second for the
		 * rare first held by a live flow): i is known to the
		 * verifier, which walks this branch twice, not 16 times. */
		if (e == -EEXIST && i < 2)
			e = snat4_take_over(&rk, rev, now);
		if (!e)
			return port;
		if (e != -EEXIST) {
			*err = e;
			return 0;
		}
	}
	return 0;
}

#endif
