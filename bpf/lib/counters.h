/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every verdict goes through one of these, so no packet leaves the program
 * without moving the counter that names why. */
#ifndef __SLUICE_COUNTERS_H
#define __SLUICE_COUNTERS_H

#include "common.h"
#include "maps.h"

#ifdef SLUICE_DRY_RUN
/* The trace build records the reasons one run met, in order, instead of
 * moving the live counters. */
#define TRACE_REASONS_MAX 8
__u32 trace_reasons[TRACE_REASONS_MAX];
__u32 trace_nreasons;

__inline void count_bytes(__u32 reason, __u32 bytes)
{
	__u32 i = trace_nreasons;

	if (i < TRACE_REASONS_MAX) {
		trace_reasons[i] = reason;
		trace_nreasons = i + 1;
	}
}
#else
/* One event of reason, of so many bytes: a packet's length, or 0 for a
 * socket's call (lib/sock4.h), which carries no packet. */
__inline void count_bytes(__u32 reason, __u32 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&sluice_counters, &reason);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}
#endif

__inline void count(const struct __sk_buff *skb, __u32 reason)
{
	count_bytes(reason, skb->len);
}

/* What sluice passes, translated or not, goes on to whatever runs after it
 * on the device: TC_ACT_UNSPEC is TCX_NEXT on a TCX chain and "continue with
 * the next filter" on clsact. Ending the chain (TC_ACT_OK) would hide the
 * packet from a CNI's policy program attached after sluice. */
__inline int verdict_pass(const struct __sk_buff *skb, __u32 reason)
{
	count(skb, reason);
	return TC_ACT_UNSPEC;
}

__inline int verdict_drop(const struct __sk_buff *skb, __u32 reason)
{
	count(skb, reason);
	return TC_ACT_SHOT;
}

#endif
