/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef __SLUICE_COMMON_H
#define __SLUICE_COMMON_H

#include <linux/bpf.h>
#include <linux/net_hdrs.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define __inline static __always_inline

#define EEXIST 17 /* as helpers return it, negated */

typedef _Bool bool;
#define true 1
#define false 0

/* Offsets from skb->data; the datapath handles Ethernet devices only. */
#define IP4_OFF ETH_HLEN
#define L4_OFF (IP4_OFF + sizeof(struct iphdr)) /* translated packets carry no IP options */

__inline void *ctx_data(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data;
}

__inline void *ctx_data_end(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data_end;
}

#endif
