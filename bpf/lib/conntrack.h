/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* sluice's own conntrack of translated flows. A new flow writes two entries
 * keyed by the tuples the two directions arrive with, so both the forward
 * path and the reply path find their flow with one lookup. */
#ifndef __SLUICE_CONNTRACK_H
#define __SLUICE_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "parse.h"

#ifdef SLUICE_BENCH_UNIQUE_FLOWS
/* Benchmark build only: every packet is a flow never seen before, so the
 * new-flow path can be timed with BPF_PROG_TEST_RUN's repeat. */
__u32 bench_flow_seq;
#endif

__inline void ct4_forward_key(struct ct4_key *k, const struct pkt4 *p)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
#ifdef SLUICE_BENCH_UNIQUE_FLOWS
	__u32 seq = bench_flow_seq++; /* BPF_PROG_TEST_RUN runs on one CPU */
	k->pad[0] = seq;
	k->pad[1] = seq >> 8;
	k->pad[2] = seq >> 16;
#endif
}

/* Reply key of a flow, from its forward packet and its backend. */
__inline void ct4_reply_key(struct ct4_key *k, const struct pkt4 *p, __be32 be_addr, __be16 be_port)
{
	k->saddr = be_addr;
	k->daddr = p->saddr;
	k->sport = be_port;
	k->dport = p->sport;
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* Forward key of a flow, from its client and frontend: what a reply knows
 * once its reverse-NAT entry is read. */
__inline void ct4_flow_key(struct ct4_key *k, __be32 client, __be16 cport, __be32 vip,
			   __be16 vport, __u8 proto)
{
	k->saddr = client;
	k->daddr = vip;
	k->sport = cport;
	k->dport = vport;
	k->proto = proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

__inline struct ct4_entry *ct4_lookup(const struct ct4_key *k)
{
	return bpf_map_lookup_elem(&ct4, k);
}

/* Removes both entries of a flow. */
__inline void ct4_delete_flow(const struct ct4_key *fwd, const struct ct4_key *rev)
{
	bpf_map_delete_elem(&ct4, fwd);
	bpf_map_delete_elem(&ct4, rev);
}

/* Records a new translated flow: client -> VIP forward entry and
 * backend -> client reply entry. With BPF_NOEXIST in fwd_flags an existing
 * forward entry is left alone and -EEXIST returned. Returns 0 or a negative
 * error. */
__inline int ct4_create(const struct ct4_key *fwd_key, const struct pkt4 *p,
			const struct lb4_backend *be, __u32 backend_id, __u32 rev_nat_id,
			__u64 fwd_flags)
{
	struct ct4_entry fwd = {
		.backend_addr = be->address,
		.backend_port = be->port,
		.kind = CT_FORWARD,
		.rev_nat_id = rev_nat_id,
		.backend_id = backend_id,
	};
	struct ct4_entry rev = {
		.kind = CT_REPLY,
		.rev_nat_id = rev_nat_id,
		.backend_id = backend_id,
	};
	struct ct4_key rk;

	int err = bpf_map_update_elem(&ct4, fwd_key, &fwd, fwd_flags);
	if (err)
		return err;
	/* Both entries exist before the packet leaves, so its answer finds
	 * its way back; without a reply entry the flow must not exist. */
	ct4_reply_key(&rk, p, be->address, be->port);
	err = bpf_map_update_elem(&ct4, &rk, &rev, BPF_ANY);
	if (err)
		bpf_map_delete_elem(&ct4, fwd_key);
	return err;
}

#endif
