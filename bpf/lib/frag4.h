/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Fragmented datagrams, translated without reassembly. Only the first
 * fragment (offset 0, MF set) carries the L4 header: it is translated as
 * any packet of its flow, and its L4 checksum, which covers the whole
 * datagram and the pseudo-header, is updated as any packet's is. It also
 * records its ports in lb4_fragments under the fields its datagram's
 * fragments share. A later fragment finds the ports there, which gives it
 * the flow's conntrack key; it follows the flow with an address rewrite
 * and the IPv4 header checksum only, having no L4 header.
 *
 * A later fragment arriving before its first (reordered, or the first was
 * lost) finds no entry: the callers in lb4.h decide what becomes of it. */
#ifndef __SLUICE_FRAG4_H
#define __SLUICE_FRAG4_H

#include "common.h"
#include "maps.h"
#include "counters.h"
#include "parse.h"
#include "csum.h"
#include "conntrack.h"

/* Not a verdict: "no entry for this fragment's datagram, or no flow". */
#define FRAG4_UNTRACKED (-3)

/* The key of a fragment's datagram, from the header as it arrived. */
__inline void frag4_key_of(struct frag4_key *k, const struct pkt4 *p)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->id = p->ip_id;
	k->proto = p->proto;
	k->pad = 0;
}

/* A first fragment was translated: its datagram's later fragments will
 * look its ports up. Counted as a translated fragment, on top of its
 * flow's verdict. A failed write (the LRU could not take an element) only
 * leaves the later fragments untracked. */
__inline void frag4_remember(const struct __sk_buff *skb, const struct pkt4 *p)
{
	struct frag4_key k;
	struct frag4_ports v = { .sport = p->sport, .dport = p->dport };

	frag4_key_of(&k, p);
	map_update(&lb4_fragments, &k, &v, BPF_ANY);
	count(skb, REASON_FRAGMENT);
}

/* Gives a later fragment its datagram's ports; false when its first
 * fragment was not translated here. */
__inline bool frag4_ports_of(struct pkt4 *p)
{
	struct frag4_key k;

	frag4_key_of(&k, p);
	struct frag4_ports *v = bpf_map_lookup_elem(&lb4_fragments, &k);
	if (!v)
		return false;
	p->sport = v->sport;
	p->dport = v->dport;
	return true;
}

/* Rewrites the destination (dst) or source address of a fragment without
 * L4 header. Changing an address and the header checksum together leaves
 * the header's one's complement sum as it was, so a CHECKSUM_COMPLETE
 * skb->csum stays right. */
__inline int frag4_rewrite(struct __sk_buff *skb, bool dst, __be32 new_addr)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct iphdr *ip = data + IP4_OFF;

	if ((void *)(ip + 1) > data_end)
		return -1;
	__be32 old_addr = dst ? ip->daddr : ip->saddr;
	if (dst)
		ip->daddr = new_addr;
	else
		ip->saddr = new_addr;
	csum_replace4(&ip->check, old_addr, new_addr);
	return 0;
}

/* Ingress: a later fragment of a client's datagram goes where its first
 * went, the backend of the flow's forward entry. The entry is not moved
 * on: the first fragment did that for the datagram. */
__inline int frag4_forward(struct __sk_buff *skb, struct pkt4 *p)
{
	struct ct4_key ck;

	if (!frag4_ports_of(p))
		return FRAG4_UNTRACKED;
	ct4_forward_key(&ck, p);
	struct ct4_entry *ct = ct4_lookup(&ck);
	/* A SNATed flow's first fragment is never remembered (lb4.h). */
	if (!ct || ct->kind != CT_FORWARD || (ct->flags & CT_F_SNAT))
		return FRAG4_UNTRACKED;
	if (frag4_rewrite(skb, true, ct->backend_addr))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	return verdict_pass(skb, REASON_FRAGMENT);
}

/* Egress: a later fragment of a backend's reply leaves from the frontend,
 * as its first did (the reply entry and its reverse-NAT entry). */
__inline int frag4_reverse(struct __sk_buff *skb, struct pkt4 *p)
{
	struct ct4_key ck;

	if (!frag4_ports_of(p))
		return FRAG4_UNTRACKED;
	ct4_flow_key(&ck, p->saddr, p->sport, p->daddr, p->dport, p->proto);
	struct ct4_entry *ct = ct4_lookup(&ck);
	if (!ct || ct->kind != CT_REPLY)
		return FRAG4_UNTRACKED;
	__u32 id = ct->rev_nat_id;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &id);
	if (!rn || !rn->address)
		return verdict_pass(skb, REASON_REPLY_NO_REVNAT);
	if (frag4_rewrite(skb, false, rn->address))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	return verdict_pass(skb, REASON_FRAGMENT);
}

#endif
