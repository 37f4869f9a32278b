/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every verdict goes through one of these, so no packet leaves the program
 * without moving the counter that names why. */
#ifndef __SLUICE_COUNTERS_H
#define __SLUICE_COUNTERS_H

#include "common.h"
#include "maps.h"

__inline void count(const struct __sk_buff *skb, __u32 reason)
{
	struct counter *c = bpf_map_lookup_elem(&sluice_counters, &reason);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

__inline int verdict_pass(const struct __sk_buff *skb, __u32 reason)
{
	count(skb, reason);
	return TC_ACT_OK;
}

__inline int verdict_drop(const struct __sk_buff *skb, __u32 reason)
{
	count(skb, reason);
	return TC_ACT_SHOT;
}

#endif
