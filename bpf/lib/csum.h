/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksum arithmetic (RFC 1071, RFC 1624) on values as they sit
 * in the packet; one's complement sums do not depend on byte order. */
#ifndef __SLUICE_CSUM_H
#define __SLUICE_CSUM_H

#include "common.h"

__inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for a 32-bit field. Used for
 * the IPv4 header checksum, which no offload state affects (the header sum
 * including its checksum is unchanged, so skb->csum stays valid). */
__inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from + (__u16)(~from >> 16);
	s += (__u16)to + (__u16)(to >> 16);
	*sum = (__sum16)~csum_fold32(s);
}

/* The same for a 16-bit field. */
__inline void csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from + (__u16)to;
	*sum = (__sum16)~csum_fold32(s);
}

#endif
