/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L2 announcement of load-balancer addresses: an ARP request arriving on a
 * device for an address l2_announce4 holds for that device is turned, in
 * place, into the reply (the device's MAC as sender) and sent back out of
 * the device. Answered in the datapath, so the address stays reachable
 * while the agent restarts. Anything else passes untouched: other ARP
 * goes on to the kernel, which answers for the node's own addresses. */
#ifndef __SLUICE_ARP4_H
#define __SLUICE_ARP4_H

#include "common.h"
#include "counters.h"
#include "maps.h"

#define ARP4_LEN (ETH_HLEN + sizeof(struct arp4hdr))

__inline int arp4_handle_ingress(struct __sk_buff *skb)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);

	if (data + ARP4_LEN > data_end) {
		if (skb->len < ARP4_LEN || bpf_skb_pull_data(skb, ARP4_LEN) < 0)
			return verdict_pass(skb, REASON_PASS);
		data = ctx_data(skb);
		data_end = ctx_data_end(skb);
	}
	struct ethhdr *eth = data;
	struct arp4hdr *arp = (void *)(eth + 1);
	if ((void *)(arp + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_ARP))
		return verdict_pass(skb, REASON_PASS);
	if (arp->ar_hrd != bpf_htons(ARPHRD_ETHER) || arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4 || arp->ar_op != bpf_htons(ARPOP_REQUEST))
		return verdict_pass(skb, REASON_PASS);
	/* A gratuitous request (sender = target) announces, asks nothing. */
	__be32 tip = arp->ar_tip, sip = arp->ar_sip;
	if (tip == sip)
		return verdict_pass(skb, REASON_PASS);
	struct l2_announce4_key key = {.ifindex = skb->ifindex, .addr = tip};
	struct l2_announce4 *a = bpf_map_lookup_elem(&l2_announce4, &key);
	if (!a)
		return verdict_pass(skb, REASON_PASS);

	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, a->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, arp->ar_sha, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	arp->ar_op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->ar_tha, arp->ar_sha, ETH_ALEN);
	arp->ar_tip = sip;
	__builtin_memcpy(arp->ar_sha, mac, ETH_ALEN);
	arp->ar_sip = tip;
	count(skb, REASON_L2_ANNOUNCE_REPLY);
	return bpf_redirect(skb->ifindex, 0);
}

#endif
