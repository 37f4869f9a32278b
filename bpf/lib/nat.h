/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address and port rewrite with checksum fix-up. The IPv4 header checksum
 * is updated inline; the L4 checksum goes through the helper because it
 * knows the skb's checksum state: for CHECKSUM_PARTIAL (a pod's own socket
 * behind a veth) only the pseudo-header part may change, and for
 * CHECKSUM_COMPLETE skb->csum must follow. */
#ifndef __SLUICE_NAT_H
#define __SLUICE_NAT_H

#include "common.h"
#include "parse.h"
#include "csum.h"

#define NAT_DST 0
#define NAT_SRC 1

/* Rewrites the destination (NAT_DST) or source (NAT_SRC) address and port.
 * Returns 0 or a negative error; the caller drops on error. */
__inline int nat4_rewrite(struct __sk_buff *skb, const struct pkt4 *p, int which,
			  __be32 new_addr, __be16 new_port)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct iphdr *ip = data + IP4_OFF;
	__be16 *ports = data + L4_OFF; /* [0] source, [1] destination */

	if ((void *)(ports + 2) > data_end)
		return -1;

	__be32 old_addr;
	__be16 old_port;
	if (which == NAT_DST) {
		old_addr = ip->daddr;
		old_port = ports[1];
		ip->daddr = new_addr;
		ports[1] = new_port;
	} else {
		old_addr = ip->saddr;
		old_port = ports[0];
		ip->saddr = new_addr;
		ports[0] = new_port;
	}
	csum_replace4(&ip->check, old_addr, new_addr);

	if (bpf_l4_csum_replace(skb, p->csum_off, old_addr, new_addr,
				p->csum_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)))
		return -1;
	if (old_port != new_port &&
	    bpf_l4_csum_replace(skb, p->csum_off, old_port, new_port,
				p->csum_flags | sizeof(new_port)))
		return -1;
	return 0;
}

/* Rewrites both ends at once (a SNATed flow's packets): destination to
 * daddr:dport, source to saddr:sport. One checksum difference covers both
 * addresses of the pseudo-header and one word both ports, so the L4
 * checksum costs two helper calls, not four. */
__inline int nat4_rewrite_both(struct __sk_buff *skb, const struct pkt4 *p, __be32 daddr,
			       __be16 dport, __be32 saddr, __be16 sport)
{
	void *data = ctx_data(skb), *data_end = ctx_data_end(skb);
	struct iphdr *ip = data + IP4_OFF;
	__be16 *ports = data + L4_OFF;

	if ((void *)(ports + 2) > data_end)
		return -1;
	__be32 old_addrs[2] = { ip->saddr, ip->daddr };
	__be32 new_addrs[2] = { saddr, daddr };
	__be32 old_ports = *(__be32 *)ports;
	__be16 new_ports16[2] = { sport, dport };
	__be32 new_ports = *(__be32 *)new_ports16;

	ip->saddr = saddr;
	ip->daddr = daddr;
	*(__be32 *)ports = new_ports;
	csum_replace4(&ip->check, old_addrs[0], saddr);
	csum_replace4(&ip->check, old_addrs[1], daddr);

	__s64 diff = bpf_csum_diff(old_addrs, sizeof(old_addrs), new_addrs, sizeof(new_addrs), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, p->csum_off, 0, diff, p->csum_flags | BPF_F_PSEUDO_HDR))
		return -1;
	if (old_ports != new_ports &&
	    bpf_l4_csum_replace(skb, p->csum_off, old_ports, new_ports, p->csum_flags | sizeof(new_ports)))
		return -1;
	return 0;
}

#endif
