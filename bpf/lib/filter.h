/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The prefilter (struct lb4_filter in types.h). The two hashes here are
 * part of the contract with the control plane: control/filter.go computes
 * the same bits from the same byte-order values. */
#ifndef __SLUICE_FILTER_H
#define __SLUICE_FILTER_H

#include "common.h"
#include "maps.h"

__inline __u32 filter_mix(__u32 x)
{
	x *= 0x9E3779B1u;
	x ^= x >> 15;
	x *= 0x85EBCA6Bu;
	return x >> (32 - LB4_FILTER_BITS_LOG2);
}

/* Bit of a service IP (__be32 as it sits in the packet). */
__inline __u32 lb4_filter_dst(__be32 addr)
{
	return filter_mix(addr);
}

/* Bit of a backend: address, port (__be16) and protocol. */
__inline __u32 lb4_filter_src(__be32 addr, __be16 port, __u8 proto)
{
	return filter_mix(addr ^ (((__u32)port << 16) | proto | 0x100));
}

__inline bool lb4_filter_has(const struct lb4_filter *f, __u32 bit)
{
	return f->words[(bit >> 6) & (LB4_FILTER_WORDS - 1)] & (1ULL << (bit & 63));
}

#endif
