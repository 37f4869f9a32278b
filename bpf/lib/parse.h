/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing: classifies a frame and extracts the 5-tuple. Every read is
 * bounds-checked against data_end; a header split across fragments of the
 * skb is pulled into the linear area once. */
#ifndef __SLUICE_PARSE_H
#define __SLUICE_PARSE_H

#include "common.h"

struct pkt4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* TCP only: TCP_F_* */
	__u8 frag;      /* PKT4_FRAG_FIRST on a first fragment (PARSE_L4); 0 unfragmented */
	__u8 pad;
	__be16 ip_id;   /* fragments only: the IPv4 identification */
	__u16 pad2;
	__u32 csum_off;   /* offset of the TCP/UDP checksum field */
	__u32 csum_flags; /* BPF_F_MARK_MANGLED_0 for UDP: a zero checksum stays "none" */
};

#define PKT4_FRAG_FIRST 1

enum parse_result {
	PARSE_L4,            /* IPv4 TCP/UDP without options, unfragmented or a first fragment: pkt4 complete */
	PARSE_NOT_OURS,      /* not IPv4, or not TCP/UDP/ICMP */
	PARSE_FRAGMENT,      /* TCP/UDP fragment: only addresses and proto are set */
	PARSE_IP_OPTIONS,    /* TCP/UDP with IP options: only addresses and proto are set */
	/* Fragments (lib/frag4.h): a first one is PARSE_L4 with pkt4.frag set;
	 * PARSE_FRAGMENT is left for those that cannot be translated (IP
	 * options, a first fragment cut inside its L4 header). */
	PARSE_LATER_FRAGMENT, /* TCP/UDP fragment after the first: addresses, proto and
			       * ip_id are set, the ports are not */
	PARSE_MALFORMED_IP,
	PARSE_MALFORMED_L4,
	PARSE_ICMP,          /* whole IPv4 ICMP datagram without options: addresses and
			      * proto are set; lib/icmp4.h reads the rest */
};

/* Enough for Ethernet + IPv4 + a TCP header without options. */
#define PARSE_LINEAR_LEN (ETH_HLEN + sizeof(struct iphdr) + sizeof(struct tcphdr))

/* Ports and, for TCP, flags: of an unfragmented packet or a first
 * fragment, whose L4 header of l4_len bytes at most starts at l4. */
__inline int parse_l4(struct pkt4 *p, void *l4, void *data_end, __u32 l4_len)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > data_end || l4_len < sizeof(*th))
			return PARSE_MALFORMED_L4;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		p->csum_off = L4_OFF + __builtin_offsetof(struct tcphdr, check);
		p->csum_flags = 0;
	} else {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > data_end || l4_len < sizeof(*uh))
			return PARSE_MALFORMED_L4;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->csum_off = L4_OFF + __builtin_offsetof(struct udphdr, check);
		p->csum_flags = BPF_F_MARK_MANGLED_0;
	}
	return PARSE_L4;
}

/* A TCP/UDP fragment. The first one (offset 0) carries the L4 header and
 * is parsed as a whole packet would be, except that a header cut short is
 * no malformed packet but a fragment that cannot be translated (RFC 1858's
 * tiny fragments among them). Later ones carry no L4 header at all. */
__inline int parse_fragment(struct pkt4 *p, const struct iphdr *ip, __u32 ihl, __u32 tot_len,
			    void *data_end)
{
	if (ihl != sizeof(*ip))
		return PARSE_FRAGMENT;
	p->ip_id = ip->id;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return PARSE_LATER_FRAGMENT;
	p->frag = PKT4_FRAG_FIRST;
	if (parse_l4(p, (void *)(ip + 1), data_end, tot_len - ihl) != PARSE_L4)
		return PARSE_FRAGMENT;
	return PARSE_L4;
}

__inline int parse_ipv4(struct __sk_buff *skb, struct pkt4 *p)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);

	if (data + PARSE_LINEAR_LEN > data_end && skb->len > (__u32)(data_end - data)) {
		__u32 want = skb->len < PARSE_LINEAR_LEN ? skb->len : PARSE_LINEAR_LEN;

		if (bpf_skb_pull_data(skb, want) < 0)
			return PARSE_MALFORMED_IP;
		data = ctx_data(skb);
		data_end = ctx_data_end(skb);
	}

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_OURS;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED_IP;
	__u32 ihl = ip->ihl * 4;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	/* IPv4 BIG TCP: a GSO packet longer than 64 KiB carries tot_len 0
	 * and its length is the skb's. */
	if (tot_len == 0 && skb->len - ETH_HLEN > 0xffff)
		tot_len = skb->len - ETH_HLEN;
	if (ip->version != 4 || ihl < sizeof(*ip) || tot_len < ihl ||
	    tot_len > skb->len - ETH_HLEN)
		return PARSE_MALFORMED_IP;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) {
		/* ICMP errors about translated flows are translated too
		 * (lib/icmp4.h); a fragmented one or one with options cannot
		 * be about them, and passes like any other protocol. */
		if (p->proto == IPPROTO_ICMP && ihl == sizeof(*ip) &&
		    !(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
			return PARSE_ICMP;
		return PARSE_NOT_OURS;
	}
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return parse_fragment(p, ip, ihl, tot_len, data_end);
	if (ihl != sizeof(*ip))
		return PARSE_IP_OPTIONS;

	return parse_l4(p, (void *)(ip + 1), data_end, tot_len - ihl);
}

#endif
