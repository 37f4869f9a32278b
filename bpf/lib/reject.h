/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* REJECT: turn the packet into an ICMP destination/port unreachable carrying
 * the original IP header and 8 bytes of L4, and send it back out of the
 * device it came in on. A TCP client then fails with ECONNREFUSED at once
 * instead of retransmitting SYNs into a timeout. */
#ifndef __SLUICE_REJECT_H
#define __SLUICE_REJECT_H

#include "common.h"
#include "counters.h"
#include "parse.h"
#include "csum.h"
#include "ratelimit.h"

struct reject4 {
	__u16 align;         /* puts the IP headers on 4-byte boundaries on the stack */
	struct ethhdr eth;
	struct iphdr ip;
	struct icmphdr icmp;
	struct iphdr orig_ip; /* the offending packet's header ... */
	__u8 orig_l4[8];      /* ... and the first 8 bytes of its payload (ports) */
};

#define REJECT4_LEN (sizeof(struct reject4) - sizeof(__u16))

/* How far reject4_clear_partial pulls the data at first: one byte past
 * the original packet's L4 header, where its checksum starts. */
#define REJECT4_PULL ((int)L4_OFF + 1)

/* The ICMP types that are not errors (RFC 792, 950): echo and echo reply,
 * router advertisement and solicitation, timestamp, information and
 * address mask request and reply. */
#define ICMP_QUERY_TYPES (1u << 0 | 1u << 8 | 1u << 9 | 1u << 10 | 1u << 13 | 1u << 14 | \
			  1u << 15 | 1u << 16 | 1u << 17 | 1u << 18)

/* RFC 1122 3.2.2 (and RFC 1812 4.3.2.7): no ICMP error about an ICMP error
 * (or a message of unknown type, as the kernel assumes), a TCP RST, a
 * fragment other than the first, a datagram to a broadcast or multicast
 * address, link-layer or IP, or one whose source does not name a single
 * host: zero ("this network", 0/8), loopback, multicast, class E and the
 * limited broadcast. */
__inline bool reject4_no_answer(const struct reject4 *r, __u8 tcp_flags, __u8 icmp_type)
{
	__u8 src = ((const __u8 *)&r->orig_ip.saddr)[0];
	__u8 dst = ((const __u8 *)&r->orig_ip.daddr)[0];

	if (src == 0 || src == 127 || src >= 224 || dst >= 224)
		return true;
	if (r->eth.h_dest[0] & 1) /* a link-layer broadcast or multicast */
		return true;
	if (r->orig_ip.frag_off & bpf_htons(IP_OFFSET))
		return true;
	if (r->orig_ip.protocol == IPPROTO_TCP)
		return tcp_flags & TCP_F_RST;
	if (r->orig_ip.protocol == IPPROTO_ICMP)
		return icmp_type > 31 || !(ICMP_QUERY_TYPES & (1u << icmp_type));
	return false;
}

/* A packet from a local socket (a pod's, behind a veth) or a GRO train
 * arrives CHECKSUM_PARTIAL: csum_start and csum_offset point at its L4
 * checksum, which whoever transmits it last (the NIC, or
 * skb_checksum_help() on a device without checksum offload) is to fill in.
 * Rewritten into an ICMP error that ends in the same place, it would get a
 * "checksum" written over the quoted header (TCP: its TTL and protocol)
 * or the ICMP header (UDP), and be dropped by the client. No helper sets
 * ip_summed, but skb_postpull_rcsum() drops CHECKSUM_PARTIAL when the
 * checksum start lies before skb->data. So the packet is made long enough
 * and its data pulled past the start (two pulls: kernels that update the
 * checksum state before moving data see the start behind them on the
 * second), then pushed back, which puts the network and transport headers
 * where they were. The packet is CHECKSUM_NONE afterwards whatever it was:
 * the ICMP checksum written below is final and nothing recomputes it. */
__inline int reject4_clear_partial(struct __sk_buff *skb)
{
	if (bpf_skb_change_tail(skb, REJECT4_LEN + REJECT4_PULL + 1, 0) ||
	    bpf_skb_adjust_room(skb, -REJECT4_PULL, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_adjust_room(skb, -1, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_adjust_room(skb, REJECT4_PULL + 1, BPF_ADJ_ROOM_NET, 0))
		return -1;
	return bpf_skb_change_tail(skb, REJECT4_LEN, 0);
}

/* Turns a packet to a service port without endpoints, or to a port a
 * service IP does not serve, into the ICMP port unreachable sent back
 * (reason counts it), unless the packet must get no answer or the CPU's
 * ICMP error rate is spent: then it is dropped and counted as such. */
__inline int reject4(struct __sk_buff *skb, __u32 reason)
{
	struct reject4 r = {};
	__u8 tcp_flags = 0;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, 0, &r.eth, sizeof(r.eth)) ||
	    bpf_skb_load_bytes(skb, IP4_OFF, &r.orig_ip, sizeof(r.orig_ip) + sizeof(r.orig_l4)))
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);
	if (r.orig_ip.protocol == IPPROTO_TCP &&
	    bpf_skb_load_bytes(skb, L4_OFF + 13, &tcp_flags, sizeof(tcp_flags)))
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);
	if (reject4_no_answer(&r, tcp_flags, r.orig_l4[0]))
		return verdict_drop(skb, REASON_DROP_NO_ANSWER);
	if (!reject_allowed())
		return verdict_drop(skb, REASON_REJECT_RATE_LIMITED);

	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, r.eth.h_dest, ETH_ALEN);
	__builtin_memcpy(r.eth.h_dest, r.eth.h_source, ETH_ALEN);
	__builtin_memcpy(r.eth.h_source, mac, ETH_ALEN);

	r.ip.version = 4;
	r.ip.ihl = sizeof(r.ip) / 4;
	r.ip.tos = 0xc0; /* internetwork control, as the kernel's ICMP errors */
	r.ip.tot_len = bpf_htons(REJECT4_LEN - ETH_HLEN);
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = r.orig_ip.daddr; /* from the address the client tried */
	r.ip.daddr = r.orig_ip.saddr;
	sum = bpf_csum_diff(0, 0, (__be32 *)&r.ip, sizeof(r.ip), 0);
	if (sum < 0)
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);
	r.ip.check = (__sum16)~csum_fold32(sum);

	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	sum = bpf_csum_diff(0, 0, (__be32 *)&r.icmp,
			    sizeof(r.icmp) + sizeof(r.orig_ip) + sizeof(r.orig_l4), 0);
	if (sum < 0)
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);
	r.icmp.checksum = (__sum16)~csum_fold32(sum);

	if (reject4_clear_partial(skb) ||
	    bpf_skb_store_bytes(skb, 0, &r.eth, REJECT4_LEN,
				BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH))
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);
	count(skb, reason); /* bytes: those of the ICMP error sent back */
	return bpf_redirect(skb->ifindex, 0);
}

#endif
