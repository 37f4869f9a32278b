/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef __SLUICE_COMMON_H
#define __SLUICE_COMMON_H

#include <linux/bpf.h>
#include <linux/net_hdrs.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define __inline static __always_inline

#define ENOENT 2  /* as helpers return them, negated */
#define EBUSY 16
#define EEXIST 17
#define ENOSPC 28

#define NSEC_PER_SEC 1000000000ULL

typedef _Bool bool;
#define true 1
#define false 0

/* Offsets from skb->data; the datapath handles Ethernet devices only. */
#define IP4_OFF ETH_HLEN
#define L4_OFF (IP4_OFF + sizeof(struct iphdr)) /* translated packets carry no IP options */

/* Every write to a map, and every store into a map value, goes through
 * these. The trace build (SLUICE_DRY_RUN, `sluice trace`) runs the same code
 * on the live maps and must change nothing: there a write succeeds without
 * effect, as if the entry were written and then lost. */
#ifdef SLUICE_DRY_RUN
/* An update answers what the real one would where the datapath branches on
 * it: BPF_NOEXIST on a present key is -EEXIST (a retransmitted SYN, a reply
 * tuple already held), so a trace takes the path the packet would. */
#define map_update(map, key, val, flags)                                          \
	({                                                                        \
		(void)(val);                                                      \
		__u64 __flags = (flags);                                          \
		void *__old = bpf_map_lookup_elem(map, key);                      \
		(__flags == BPF_NOEXIST && __old) ? -EEXIST :                     \
		(__flags == BPF_EXIST && !__old) ? -ENOENT : 0;                   \
	})
#define map_delete(map, key) ({ (void)(map); (void)(key); 0; })
#define map_store(lvalue, val) ({ (void)(val); })
#else
#define map_update(map, key, val, flags) bpf_map_update_elem(map, key, val, flags)
#define map_delete(map, key) bpf_map_delete_elem(map, key)
#define map_store(lvalue, val) ((lvalue) = (val))
#endif

__inline void *ctx_data(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data;
}

__inline void *ctx_data_end(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data_end;
}

#endif
