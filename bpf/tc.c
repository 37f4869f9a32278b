// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* tc programs attached to every device the agent serves. At ingress,
 * service traffic is translated to its backend before the kernel routes and
 * filters it; at egress, replies are translated back after it did, so that
 * routing (rp_filter) and netfilter's conntrack see each flow as one
 * client <-> backend connection. */

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/counters.h"
#include "lib/lb4.h"
#include "lib/icmp4.h"
#include "lib/arp4.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int sluice_ingress(struct __sk_buff *skb)
{
	struct pkt4 p = {};

	switch (parse_ipv4(skb, &p)) {
	case PARSE_L4:
		return lb4_handle_ingress(skb, &p);
	case PARSE_ICMP:
		return icmp4_handle_ingress(skb, &p);
	case PARSE_FRAGMENT:
		return lb4_handle_untranslatable(skb, &p, REASON_DROP_FRAGMENT);
	case PARSE_LATER_FRAGMENT:
		return lb4_handle_later_fragment(skb, &p);
	case PARSE_IP_OPTIONS:
		return lb4_handle_untranslatable(skb, &p, REASON_DROP_IP_OPTIONS);
	case PARSE_MALFORMED_IP:
		return verdict_drop(skb, REASON_DROP_MALFORMED_IP);
	case PARSE_MALFORMED_L4:
		return verdict_drop(skb, REASON_DROP_MALFORMED_L4);
	case PARSE_NOT_OURS:
		/* Not IPv4 TCP/UDP/ICMP: ARP requests for announced
		 * load-balancer addresses are answered, the rest passes. */
		return arp4_handle_ingress(skb);
	default:
		return verdict_pass(skb, REASON_PASS);
	}
}

SEC("tc")
int sluice_egress(struct __sk_buff *skb)
{
	struct pkt4 p = {};

	switch (parse_ipv4(skb, &p)) {
	case PARSE_LATER_FRAGMENT:
		return lb4_handle_egress_later_fragment(skb, &p);
	case PARSE_L4:
		return lb4_handle_egress(skb, &p);
	case PARSE_ICMP:
		return icmp4_handle_egress(skb, &p);
	default:
		/* Malformed packets are the ingress program's to drop: on the
		 * way out they are the node's own. */
		return verdict_pass(skb, REASON_PASS);
	}
}

/* Does nothing: the baseline that benchmarks subtract. */
SEC("tc")
int sluice_empty(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
