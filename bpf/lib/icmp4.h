/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors about translated flows (rule 23). An error quotes the head of
 * the packet it is about, so it names the flow as one side of the
 * translation saw it; translated like the flow's own packets, it reaches the
 * other side in the terms that side knows, and its sockets find it: a path
 * MTU learnt through a frontend, a UDP client's ECONNREFUSED from a backend's
 * port unreachable.
 *
 * Nothing here writes conntrack: an error is no traffic of its flow and does
 * not keep it alive. */
#ifndef __SLUICE_ICMP4_H
#define __SLUICE_ICMP4_H

#include "common.h"
#include "csum.h"
#include "counters.h"
#include "filter.h"
#include "conntrack.h"
#include "nat.h"
#include "lb4.h"

/* The error's ICMP header, then the quoted IPv4 header, then its L4 bytes. A
 * quote with IP options is no packet of a translated flow (those carry
 * none), so a quote that concerns sluice has its L4 header at one offset. */
#define ICMP4_OFF L4_OFF
#define QUOTE_OFF (ICMP4_OFF + sizeof(struct icmphdr))
#define QUOTE_L4_OFF (QUOTE_OFF + sizeof(struct iphdr))

/* What every error carries at least (RFC 792): the quoted IPv4 header and
 * the first 8 bytes of its payload, for TCP and UDP both ports. */
struct icmp4_quote {
	struct iphdr ip;
	__be16 sport;
	__be16 dport;
	__be16 l4_rest[2]; /* UDP: length, checksum; TCP: sequence number */
};

struct icmp4_error {
	struct icmp4_quote q;
	__u32 l4_csum_off; /* the quoted TCP/UDP checksum; 0 when the quote ends before it */
	__sum16 l4_csum;
	__sum16 icmp_csum;
};

enum icmp4_read {
	ICMP4_NOT_OURS,  /* no error, or an error that cannot be about a translated flow */
	ICMP4_ERROR,     /* an error quoting a TCP/UDP packet: icmp4_error is complete */
	ICMP4_UNUSABLE,  /* an error whose quote is cut short or no IPv4 header */
};

/* Reads an ICMP datagram (PARSE_ICMP: no IP options, not fragmented). */
__inline int icmp4_read(struct __sk_buff *skb, struct icmp4_error *e)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct iphdr *ip = data + IP4_OFF;
	struct icmphdr *ih = data + ICMP4_OFF;

	if ((void *)(ih + 1) > data_end)
		return ICMP4_NOT_OURS; /* not even a type: no error */
	if (ih->type != ICMP_DEST_UNREACH && ih->type != ICMP_TIME_EXCEEDED &&
	    ih->type != ICMP_PARAMETERPROB)
		return ICMP4_NOT_OURS; /* echo and the other queries */
	e->icmp_csum = ih->checksum;

	/* The message ends where the datagram does, not at the frame's end. */
	__u32 len = bpf_ntohs(ip->tot_len) - sizeof(*ip);
	/* Linux discards an error without the quoted header and 8 bytes
	 * (icmp_socket_deliver), so nobody loses what such a one carries. */
	if (len < sizeof(struct icmphdr) + sizeof(e->q) ||
	    bpf_skb_load_bytes(skb, QUOTE_OFF, &e->q, sizeof(e->q)))
		return ICMP4_UNUSABLE;
	if (e->q.ip.version != 4 || e->q.ip.ihl < 5)
		return ICMP4_UNUSABLE;
	if (e->q.ip.ihl != 5 || (e->q.ip.protocol != IPPROTO_TCP && e->q.ip.protocol != IPPROTO_UDP) ||
	    (e->q.ip.frag_off & bpf_htons(IP_OFFSET)))
		return ICMP4_NOT_OURS; /* options, another protocol, or no ports */

	__u32 csum_at = e->q.ip.protocol == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check)
						       : __builtin_offsetof(struct udphdr, check);
	e->l4_csum_off = 0;
	e->l4_csum = 0;
	/* Routers quote 8 bytes, which hold a UDP checksum but not a TCP
	 * one; hosts quote more. */
	if (len >= sizeof(struct icmphdr) + sizeof(struct iphdr) + csum_at + sizeof(__sum16)) {
		e->l4_csum_off = QUOTE_L4_OFF + csum_at;
		if (bpf_skb_load_bytes(skb, e->l4_csum_off, &e->l4_csum, sizeof(e->l4_csum)))
			return ICMP4_UNUSABLE;
	}
	return ICMP4_ERROR;
}

/* Rewrites one endpoint of the quoted packet, its source (NAT_SRC) or its
 * destination (NAT_DST), to addr:port, and the outer address that stood for
 * it: for a quoted source the outer destination (the caller checked they
 * agree), for a quoted destination the outer source when it is that address
 * (a backend's own error; one a router or the node sent keeps its source).
 *
 * Every checksum follows: the outer IPv4 header's, the quoted header's, the
 * quoted TCP/UDP checksum when the quote holds it, and the ICMP checksum
 * over all these changes. The quoted L4 checksum is adjusted rather than
 * left: receivers do not verify it (Linux matches the quote by its ports),
 * but adjusted the quote is, byte for byte, the packet the receiver sent.
 * Each data change and its checksum's change cancel out, so skb->csum of a
 * CHECKSUM_COMPLETE packet stays right. Returns 0 or a negative error. */
__inline int icmp4_rewrite(struct __sk_buff *skb, struct icmp4_error *e, int which, __be32 addr,
			   __be16 port)
{
	struct icmp4_quote *q = &e->q;
	__be32 old_addr;
	__be16 old_port;
	__sum16 old_ipsum = q->ip.check;
	__sum16 old_l4sum = e->l4_csum;

	if (which == NAT_SRC) {
		old_addr = q->ip.saddr;
		old_port = q->sport;
		q->ip.saddr = addr;
		q->sport = port;
	} else {
		old_addr = q->ip.daddr;
		old_port = q->dport;
		q->ip.daddr = addr;
		q->dport = port;
	}
	csum_replace4(&q->ip.check, old_addr, addr);
	/* A quoted UDP checksum of 0 is "none" and stays so; a computed 0
	 * is sent as its other form, 0xffff. */
	if (e->l4_csum_off && (q->ip.protocol == IPPROTO_TCP || old_l4sum)) {
		csum_replace4(&e->l4_csum, old_addr, addr);
		csum_replace2(&e->l4_csum, old_port, port);
		if (q->ip.protocol == IPPROTO_UDP && !e->l4_csum)
			e->l4_csum = 0xffff;
	}
	csum_replace4(&e->icmp_csum, old_addr, addr);
	csum_replace2(&e->icmp_csum, old_port, port);
	csum_replace2(&e->icmp_csum, old_ipsum, q->ip.check);
	csum_replace2(&e->icmp_csum, old_l4sum, e->l4_csum);

	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct iphdr *ip = data + IP4_OFF;
	if ((void *)(ip + 1) > data_end)
		return -1;
	if (which == NAT_SRC) {
		ip->daddr = addr;
		csum_replace4(&ip->check, old_addr, addr);
	} else if (ip->saddr == old_addr) {
		ip->saddr = addr;
		csum_replace4(&ip->check, old_addr, addr);
	}

	/* The quoted UDP checksum is inside q: it goes out with it, then
	 * again with its new value. */
	if (bpf_skb_store_bytes(skb, QUOTE_OFF, q, sizeof(*q), 0))
		return -1;
	if (e->l4_csum_off &&
	    bpf_skb_store_bytes(skb, e->l4_csum_off, &e->l4_csum, sizeof(e->l4_csum), 0))
		return -1;
	return bpf_skb_store_bytes(skb, ICMP4_OFF + __builtin_offsetof(struct icmphdr, checksum),
				   &e->icmp_csum, sizeof(e->icmp_csum), 0);
}

/* Ingress: an error to the node's address about a SNATed flow's forward
 * packet (a backend's port unreachable, a router's fragmentation needed on
 * the way to the backend). Its quote, node:port -> backend, reversed is
 * the flow's reply key. The quote is restored to client -> frontend (and
 * the outer destination to the client, and a backend's outer source to
 * the frontend), and the error forwarded to the client. */
__inline int icmp4_snat_to_client(struct __sk_buff *skb, struct icmp4_error *e,
				  const struct ct4_entry *ct)
{
	__u32 id = ct->rev_nat_id;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &id);

	if (!rn || !rn->address)
		return verdict_pass(skb, REASON_REPLY_NO_REVNAT);
	__be32 vip = rn->address;
	__be16 vport = rn->port;
	if (icmp4_rewrite(skb, e, NAT_SRC, ct->nat_addr, ct->nat_port) ||
	    icmp4_rewrite(skb, e, NAT_DST, vip, vport))
		return verdict_drop(skb, REASON_DROP_ICMP_ERROR);
	return fib4_forward(skb, REASON_ICMP_ERROR_TO_CLIENT);
}

/* Ingress: an error sent to a frontend about a reply the client got from it
 * (the client's port unreachable for a backend's datagram, a router's
 * fragmentation needed). Its quote, frontend -> client, reversed is the
 * flow's forward key; the error goes on to the flow's backend, about the
 * packet that backend sent. An error that matches no flow passes: a
 * frontend address can be the node's own (NodePort), whose sockets the
 * error may be about. */
__inline int icmp4_handle_ingress(struct __sk_buff *skb, const struct pkt4 *p)
{
	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);
	struct datapath_config *cfg = dp_config();
	bool to_node = cfg && cfg->node_addr4 && p->daddr == cfg->node_addr4;

	if (f && !lb4_filter_has(f, lb4_filter_dst(p->daddr)) && !to_node)
		return verdict_pass(skb, REASON_PASS);

	struct icmp4_error e;
	switch (icmp4_read(skb, &e)) {
	case ICMP4_ERROR:
		break;
	case ICMP4_UNUSABLE:
		/* Useless to any receiver, and to a frontend's flows
		 * unmatchable. */
		if (lb4_is_service_ip(p->daddr))
			return verdict_drop(skb, REASON_DROP_ICMP_ERROR);
		return verdict_pass(skb, REASON_PASS);
	default:
		return verdict_pass(skb, REASON_PASS);
	}
	if (e.q.ip.saddr != p->daddr)
		return verdict_pass(skb, REASON_PASS); /* not about this address's packet */

	struct ct4_key fk;
	ct4_flow_key(&fk, e.q.ip.daddr, e.q.dport, e.q.ip.saddr, e.q.sport, e.q.ip.protocol);
	struct ct4_entry *ct = ct4_lookup(&fk);
	if (ct && ct->kind == CT_REPLY && (ct->flags & CT_F_SNAT))
		return icmp4_snat_to_client(skb, &e, ct);
	if (!ct || ct->kind != CT_FORWARD)
		return verdict_pass(skb, REASON_PASS);
	__be32 nat_addr = ct->nat_addr;
	__be16 nat_port = ct->nat_port;
	bool snat = ct->flags & CT_F_SNAT;
	if (icmp4_rewrite(skb, &e, NAT_SRC, ct->backend_addr, ct->backend_port))
		return verdict_drop(skb, REASON_DROP_ICMP_ERROR);
	if (!snat)
		return verdict_pass(skb, REASON_ICMP_ERROR_TO_BACKEND);
	/* The backend knows the client by the node's address and port: the
	 * quote's destination and the client's own outer source become
	 * those, and the error, from the node's address now, is forwarded. */
	if (icmp4_rewrite(skb, &e, NAT_DST, nat_addr, nat_port))
		return verdict_drop(skb, REASON_DROP_ICMP_ERROR);
	return fib4_forward(skb, REASON_ICMP_ERROR_TO_BACKEND);
}

/* Egress: an error on its way to a client about a forward packet of its
 * flow, which the node translated before the error's sender saw it (a
 * backend's port unreachable, the node's own fragmentation needed for the
 * backend's link). Its quote, client -> backend, reversed is the flow's
 * reply key, whose frontend the quote's destination goes back to, so that
 * the client's socket, which knows only the frontend, gets the error. Errors
 * about anything else, and ones cut short, are the node's own: they pass. */
__inline int icmp4_handle_egress(struct __sk_buff *skb, const struct pkt4 *p)
{
	struct icmp4_error e;

	if (icmp4_read(skb, &e) != ICMP4_ERROR)
		return verdict_pass(skb, REASON_PASS);

	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);
	if (f && !lb4_filter_has(f, lb4_filter_src(e.q.ip.daddr, e.q.dport, e.q.ip.protocol)))
		return verdict_pass(skb, REASON_PASS);

	struct ct4_key rk;
	ct4_flow_key(&rk, e.q.ip.daddr, e.q.dport, e.q.ip.saddr, e.q.sport, e.q.ip.protocol);
	struct ct4_entry *ct = ct4_lookup(&rk);
	if (!ct || ct->kind != CT_REPLY)
		return verdict_pass(skb, REASON_PASS);

	__u32 id = ct->rev_nat_id;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &id);
	if (!rn || !rn->address)
		return verdict_pass(skb, REASON_REPLY_NO_REVNAT);
	if (icmp4_rewrite(skb, &e, NAT_DST, rn->address, rn->port))
		return verdict_drop(skb, REASON_DROP_ICMP_ERROR);
	return verdict_pass(skb, REASON_ICMP_ERROR_TO_CLIENT);
}

#endif
