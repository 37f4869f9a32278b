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

struct reject4 {
	__u16 align;         /* puts the IP headers on 4-byte boundaries on the stack */
	struct ethhdr eth;
	struct iphdr ip;
	struct icmphdr icmp;
	struct iphdr orig_ip; /* the offending packet's header ... */
	__u8 orig_l4[8];      /* ... and the first 8 bytes of its payload (ports) */
};

#define REJECT4_LEN (sizeof(struct reject4) - sizeof(__u16))

/* Only called on PARSE_L4 packets: no IP options, and the L4 header (>= 8
 * bytes for both TCP and UDP) is present. */
__inline int reject4(struct __sk_buff *skb, __u32 reason)
{
	struct reject4 r = {};
	__s64 sum;

	if (bpf_skb_load_bytes(skb, 0, &r.eth, sizeof(r.eth)) ||
	    bpf_skb_load_bytes(skb, IP4_OFF, &r.orig_ip, sizeof(r.orig_ip) + sizeof(r.orig_l4)))
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);

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

	if (bpf_skb_change_tail(skb, REJECT4_LEN, 0) ||
	    bpf_skb_store_bytes(skb, 0, &r.eth, REJECT4_LEN, BPF_F_INVALIDATE_HASH))
		return verdict_drop(skb, REASON_DROP_REJECT_FAILED);
	count(skb, reason); /* bytes: those of the ICMP error sent back */
	return bpf_redirect(skb->ifindex, 0);
}

#endif
