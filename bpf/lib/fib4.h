/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding a translated packet past the stack. A packet whose source was
 * translated to the node's own address (SNAT), or a reply translated back
 * to a frontend that is one of the node's addresses, is a martian to the
 * stack's input path: a packet arriving with a local source address is
 * dropped by its source validation. Such packets are routed here instead,
 * with the node's own routing table (bpf_fib_lookup, as the stack's
 * forwarding would), and sent out of the egress device with
 * bpf_redirect (neighbour known) or bpf_redirect_neigh (the kernel resolves
 * it). The egress device's tc programs still see them: redirect goes
 * through its transmit path. */
#ifndef __SLUICE_FIB4_H
#define __SLUICE_FIB4_H

#include "common.h"
#include "counters.h"
#include "csum.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Forwards the (already translated) packet at skb's IPv4 header, or drops
 * it with REASON_DROP_FIB; reason counts it when forwarded.
 *
 * A global function, not inlined: the verifier checks it once, on its own,
 * instead of at each of the paths that forward (SNATed packets, their
 * replies, ICMP errors about them), which kept the ingress program's
 * verification within reach of an emulated 5.10 kernel's test budget. Its
 * arguments are the context and a scalar, as global functions take since
 * 5.6. */
__attribute__((noinline)) int fib4_forward(struct __sk_buff *skb, __u32 reason)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP4_OFF;

	if ((void *)(ip + 1) > data_end)
		return verdict_drop(skb, REASON_DROP_FIB);
	/* A router's TTL rule: a packet that would leave with TTL 0 is not
	 * forwarded. */
	if (ip->ttl <= 1)
		return verdict_drop(skb, REASON_DROP_FIB);

	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.tos = ip->tos,
		.l4_protocol = ip->protocol,
		.ipv4_src = ip->saddr,
		.ipv4_dst = ip->daddr,
		/* the device it came in on; a test run has none but skb->ifindex */
		.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex,
	};
	long ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return verdict_drop(skb, REASON_DROP_FIB);

#ifndef SLUICE_BENCH_KEEP_TTL
	/* TTL - 1: the checksum's 16-bit word holding TTL and protocol.
	 * (Benchmark builds keep it: BPF_PROG_TEST_RUN's repeat reuses the
	 * rewritten skb, whose TTL would run out.) */
	__be16 old = *(__be16 *)&ip->ttl;
	ip->ttl--;
	csum_replace2(&ip->check, old, *(__be16 *)&ip->ttl);
#endif

	count(skb, reason);
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect(fib.ifindex, 0);
}

#endif
