/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* sluice's own conntrack of translated flows. A new flow writes two entries
 * keyed by the tuples the two directions arrive with, so the forward path
 * (ingress) and the reply path (egress) each find their flow with one
 * lookup. Each entry carries its direction's expiry; the flow lives while
 * either entry does, and the agent's collector removes both together. The
 * datapath never deletes a flow itself: a FIN or RST moves it to the short
 * close lifetime, so an out-of-window RST cannot kill a live flow. */
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

/* Set by the loader (bpf.UseCoarseClock) where the kernel has
 * bpf_ktime_get_coarse_ns (5.11+): CLOCK_MONOTONIC_COARSE, read from the
 * timekeeper in a few ns where bpf_ktime_get_ns reads the clock source (tens
 * of ns, once per packet of every tracked flow). It lags CLOCK_MONOTONIC by
 * at most a tick, which seconds of expiry do not notice. The value is a
 * constant of the loaded program, so on an older kernel the verifier never
 * visits the call it could not load. */
volatile const __u8 ct_coarse_clock = 0;

/* Seconds of CLOCK_MONOTONIC, the clock of ct4_entry.expires. */
__inline __u32 ct_now(void)
{
	__u64 ns = ct_coarse_clock ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();

	return ns / NSEC_PER_SEC;
}

/* Lifetime of a state in seconds: the agent's setting, else the default. */
__inline __u32 ct_timeout(__u32 which)
{
	__u32 *secs = bpf_map_lookup_elem(&sluice_ct_timeouts, &which);

	if (secs && *secs)
		return *secs;
	switch (which) {
	case CT_TIMEOUT_TCP_SYN:
		return CT_DEFAULT_TCP_SYN;
	case CT_TIMEOUT_TCP_ESTABLISHED:
		return CT_DEFAULT_TCP_ESTABLISHED;
	case CT_TIMEOUT_TCP_CLOSE:
		return CT_DEFAULT_TCP_CLOSE;
	case CT_TIMEOUT_UDP_REPLIED:
		return CT_DEFAULT_UDP_REPLIED;
	default:
		return CT_DEFAULT_UDP;
	}
}

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

/* Reply key of a tracked flow, from its forward packet and forward entry:
 * a SNATed flow's replies come to the node's address and port. */
__inline void ct4_reply_key_of(struct ct4_key *k, const struct pkt4 *p, const struct ct4_entry *fwd)
{
	ct4_reply_key(k, p, fwd->backend_addr, fwd->backend_port);
	if (fwd->flags & CT_F_SNAT) {
		k->daddr = fwd->nat_addr;
		k->dport = fwd->nat_port;
	}
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
	return bpf_map_lookup_elem(&ct4_v3, k);
}

/* The forward entry of a reply entry's flow: its key is the flow's client
 * (the reply's destination, or for a SNATed flow the address its reply
 * entry keeps) and the flow's frontend. NULL when the frontend or the
 * entry is gone. */
__inline struct ct4_entry *ct4_forward_of_reply(const struct ct4_key *rk, const struct ct4_entry *re,
						struct ct4_key *fk)
{
	__u32 rev_nat_id = re->rev_nat_id;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &rev_nat_id);

	if (!rn || !rn->address)
		return NULL;
	bool snat = re->flags & CT_F_SNAT;
	ct4_flow_key(fk, snat ? re->nat_addr : rk->daddr, snat ? re->nat_port : rk->dport,
		     rn->address, rn->port, rk->proto);
	struct ct4_entry *fe = ct4_lookup(fk);
	if (!fe || fe->kind != CT_FORWARD || fe->backend_addr != rk->saddr ||
	    fe->backend_port != rk->sport)
		return NULL;
	return fe;
}

__inline bool ct4_closing(const struct ct4_entry *e)
{
	return e->flags & (CT_F_FIN | CT_F_RST);
}

/* Whether a packet now makes an answered UDP flow a stream, with the
 * stream lifetime: only once the flow has lasted more than
 * CT_UDP_STREAM_AFTER seconds, netfilter's rule (5.9+), so a query
 * answered at once, as every DNS lookup is, keeps the short lifetime.
 * Otherwise each of a Pod's resolver queries would hold its two entries
 * for the stream lifetime, four times as long as netfilter holds the same
 * flow. "More than" on a clock of whole seconds: never sooner than
 * netfilter. Signed: a created time a tick ahead of the coarse clock (the
 * loader stamps migrated entries from the precise one) is no age. */
__inline bool ct4_udp_stream(const struct ct4_entry *e, __u32 now)
{
	return (__s32)(now - e->created) > CT_UDP_STREAM_AFTER;
}

/* The lifetime an answered UDP flow's entries get from a packet now. */
__inline __u32 ct4_udp_replied_lifetime(const struct ct4_entry *e, __u32 now)
{
	return ct_timeout(ct4_udp_stream(e, now) ? CT_TIMEOUT_UDP_REPLIED : CT_TIMEOUT_UDP);
}

/* The lifetime an entry's state gives it. A TCP entry is established once
 * the backend answered and the packet is no SYN; until then (including a
 * flow picked up by a stray segment) it has the short SYN lifetime. */
__inline __u32 ct4_lifetime(const struct ct4_entry *e, __u8 proto, __u8 tcp_flags, __u32 now)
{
	bool forward = e->kind == CT_FORWARD;

	if (proto == IPPROTO_TCP) {
		if (ct4_closing(e))
			return ct_timeout(CT_TIMEOUT_TCP_CLOSE);
		if ((forward && !(e->flags & CT_F_SEEN_REPLY)) || (tcp_flags & TCP_F_SYN))
			return ct_timeout(CT_TIMEOUT_TCP_SYN);
		return ct_timeout(CT_TIMEOUT_TCP_ESTABLISHED);
	}
	if (forward && !(e->flags & CT_F_SEEN_REPLY))
		return ct_timeout(CT_TIMEOUT_UDP);
	return ct4_udp_replied_lifetime(e, now);
}

/* Moves an entry on by one packet of its own direction: its FIN and RST
 * flags, then its expiry. Stores only what changed, so a steady flow
 * writes its entry about once a second, not once a packet. */
__inline void ct4_touch(struct ct4_entry *e, const struct pkt4 *p, __u32 now)
{
	__u8 flags = e->flags;

	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & TCP_F_FIN)
			flags |= CT_F_FIN;
		if (p->tcp_flags & TCP_F_RST)
			flags |= CT_F_RST;
		else
			flags &= ~CT_F_RST; /* the flow went on: that RST was not its end */
	}
	if (flags != e->flags)
		map_store(e->flags, flags);
	__u32 expires = now + ct4_lifetime(e, p->proto, p->tcp_flags, now);
	if (expires != e->expires)
		map_store(e->expires, expires);
}

/* A FIN or RST puts the other direction's entry on the close lifetime too,
 * unless it is already shorter: the side that has not closed may still
 * send, and its next packet restores its own lifetime. */
__inline void ct4_close_peer(struct ct4_entry *peer, __u32 now)
{
	__u32 expires = now + ct_timeout(CT_TIMEOUT_TCP_CLOSE);

	if (peer->expires > expires)
		map_store(peer->expires, expires);
}

/* The reply path tells the forward entry that the backend answered: an
 * answered flow that has lasted (ct4_udp_stream) has the longer lifetimes. */
__inline void ct4_seen_reply(struct ct4_entry *fwd, __u8 proto, __u32 now)
{
	if (!(fwd->flags & CT_F_SEEN_REPLY))
		map_store(fwd->flags, fwd->flags | CT_F_SEEN_REPLY);
	if (proto != IPPROTO_TCP) {
		/* A TCP forward entry is established by the client's next
		 * segment; a datagram flow is answered now. */
		__u32 expires = now + ct4_udp_replied_lifetime(fwd, now);
		if (fwd->expires < expires)
			map_store(fwd->expires, expires);
	}
}

__inline bool ct4_closes(const struct pkt4 *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_FIN | TCP_F_RST));
}

/* Removes both entries of a flow. */
__inline void ct4_delete_flow(const struct ct4_key *fwd, const struct ct4_key *rev)
{
	map_delete(&ct4_v3, fwd);
	map_delete(&ct4_v3, rev);
}

/* The entries a new flow starts with: both on the lifetime of an
 * unanswered flow, so that a stray segment or datagram holds its two
 * entries only briefly. */
__inline void ct4_new_entries(struct ct4_entry *fwd, struct ct4_entry *rev, const struct pkt4 *p,
			      const struct lb4_backend *be, __u32 backend_id, __u32 rev_nat_id,
			      __u32 now)
{
	__u32 expires = now + ct_timeout(p->proto == IPPROTO_TCP ? CT_TIMEOUT_TCP_SYN : CT_TIMEOUT_UDP);

	fwd->backend_addr = be->address;
	fwd->backend_port = be->port;
	fwd->kind = CT_FORWARD;
	fwd->flags = 0;
	fwd->rev_nat_id = rev_nat_id;
	fwd->backend_id = backend_id;
	fwd->expires = expires;
	fwd->created = now;
	fwd->nat_addr = 0;
	fwd->nat_port = 0;
	fwd->pad[0] = fwd->pad[1] = 0;
	*rev = *fwd;
	rev->backend_addr = 0;
	rev->backend_port = 0;
	rev->kind = CT_REPLY;
}

#endif
