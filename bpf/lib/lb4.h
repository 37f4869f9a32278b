/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 service translation: frontend lookup, backend selection, DNAT of
 * forward packets and reverse NAT of replies. */
#ifndef __SLUICE_LB4_H
#define __SLUICE_LB4_H

#include "common.h"
#include "maps.h"
#include "counters.h"
#include "parse.h"
#include "nat.h"
#include "conntrack.h"
#include "reject.h"
#include "filter.h"
#include "affinity.h"
#include "frag4.h"
#include "fib4.h"
#include "snat4.h"

/* Not a verdict: lb4_service's "the destination is no service IP". */
#define LB4_NOT_SERVICE (-2)

__inline bool lb4_is_service_ip(__be32 addr)
{
	struct lb4_key k = { .address = addr };

	return bpf_map_lookup_elem(&lb4_services, &k) != NULL;
}

__inline bool in_service_cidr(const struct datapath_config *cfg, __be32 addr)
{
	return cfg && cfg->service_cidr4_mask &&
	       (addr & cfg->service_cidr4_mask) == cfg->service_cidr4;
}

/* Sources that get the internal scope of a two-scope frontend (rule 13):
 * this node's pods and the node's own address. */
__inline bool lb4_internal_source(const struct datapath_config *cfg, __be32 saddr)
{
	return cfg && ((cfg->pod_cidr4_mask && (saddr & cfg->pod_cidr4_mask) == cfg->pod_cidr4) ||
		       (cfg->node_addr4 && saddr == cfg->node_addr4));
}

/* Whether a new flow from saddr may open to a frontend with source ranges
 * (rule 21): the longest-prefix lookup of (frontend, source) finds one. */
__inline bool lb4_source_allowed(__u32 rev_nat_id, __be32 saddr)
{
	struct lb4_src_range_key k = { .prefixlen = 64, .rev_nat_id = rev_nat_id, .addr = saddr };

	return bpf_map_lookup_elem(&lb4_source_ranges, &k) != NULL;
}

/* A backend is usable by an existing flow while its id still holds the
 * same address:port, so a recycled id never captures an old flow. */
__inline bool lb4_backend_matches(__u32 id, __be32 addr, __be16 port)
{
	struct lb4_backend *be = bpf_map_lookup_elem(&lb4_backends, &id);

	return be && (be->flags & BE_F_ACTIVE) && be->address == addr && be->port == port;
}

__inline int lb4_dnat(struct __sk_buff *skb, const struct pkt4 *p, __be32 addr, __be16 port,
		      __u32 reason)
{
	if (nat4_rewrite(skb, p, NAT_DST, addr, port))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	if (p->frag)
		frag4_remember(skb, p);
	return verdict_pass(skb, reason);
}

/* Whether the flow a reply entry belongs to is still alive: either of its
 * entries has not expired. */
__inline bool lb4_reply_live(const struct ct4_key *rk, const struct ct4_entry *re, __u32 now)
{
	struct ct4_key fk;

	if (re->expires >= now)
		return true;
	struct ct4_entry *fe = ct4_forward_of_reply(rk, re, &fk);
	return fe && fe->expires >= now;
}

/* Writes a new flow's two entries: the forward one with fwd_flags (the
 * caller handles -EEXIST under BPF_NOEXIST), then the reply one. A reply
 * tuple already held by a live flow of another frontend (one client port
 * used for two frontends that share a backend) is a clash: the new flow is
 * refused with -EBUSY, since both flows' replies would arrive as one tuple.
 * Without its reply entry a flow must not exist: on any failure the
 * forward entry goes again. */
__inline int lb4_ct_create(const struct ct4_key *fk, const struct pkt4 *p,
			   const struct lb4_backend *be, __u32 backend_id, __u32 rev_nat_id,
			   __u32 now, __u64 fwd_flags)
{
	struct ct4_entry fwd, rev;
	struct ct4_key rk;

	ct4_new_entries(&fwd, &rev, p, be, backend_id, rev_nat_id, now);
	int err = map_update(&ct4_v3, fk, &fwd, fwd_flags);
	if (err)
		return err;
	ct4_reply_key(&rk, p, be->address, be->port);
	err = map_update(&ct4_v3, &rk, &rev, BPF_NOEXIST);
	if (err == -EEXIST) {
		struct ct4_entry *old = ct4_lookup(&rk);
		/* An old reply entry of this same flow (same client tuple,
		 * same frontend), or of a dead flow, is taken over. */
		if (old && (old->kind != CT_REPLY ||
			    (old->rev_nat_id != rev_nat_id && lb4_reply_live(&rk, old, now))))
			err = -EBUSY;
		else
			err = map_update(&ct4_v3, &rk, &rev, BPF_ANY);
	}
	if (err)
		map_delete(&ct4_v3, fk);
	return err;
}

/* Writes a SNATed flow's two entries: the reply one first, under the port
 * it allocates (lib/snat4.h), then the forward one carrying that port.
 * -ENOSPC: no free port. *port is the allocated port. */
__inline int lb4_ct_create_snat(struct __sk_buff *skb, const struct ct4_key *fk,
				const struct pkt4 *p, const struct datapath_config *cfg,
				const struct lb4_backend *be, __u32 backend_id, __u32 rev_nat_id,
				__u32 now, __u64 fwd_flags, __be16 *port)
{
	struct ct4_entry fwd, rev;
	struct ct4_key rk;
	int err;

	ct4_new_entries(&fwd, &rev, p, be, backend_id, rev_nat_id, now);
	fwd.flags = rev.flags = CT_F_SNAT;
	rev.nat_addr = p->saddr;
	rev.nat_port = p->sport;
	*port = snat4_alloc(skb, p, cfg, be, &rev, now, &err);
	if (!*port)
		return err ? err : -ENOSPC;
	fwd.nat_addr = cfg->node_addr4;
	fwd.nat_port = *port;
	err = map_update(&ct4_v3, fk, &fwd, fwd_flags);
	if (err) {
		ct4_flow_key(&rk, be->address, be->port, cfg->node_addr4, *port, p->proto);
		map_delete(&ct4_v3, &rk);
	}
	return err;
}

/* DNAT and SNAT of a SNATed flow's forward packet, then forwarded past the
 * stack, to which its source is a martian (lib/fib4.h). */
__inline int lb4_dnat_snat(struct __sk_buff *skb, const struct pkt4 *p, __be32 addr, __be16 port,
			   __be32 nat_addr, __be16 nat_port, __u32 reason)
{
	if (nat4_rewrite_both(skb, p, addr, port, nat_addr, nat_port))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	return fib4_forward(skb, reason);
}

/* Forward packet of a live tracked flow: its entry moves on, a FIN or RST
 * puts the reply entry on the close lifetime too, and the packet goes to
 * the flow's backend. */
__inline int lb4_follow(struct __sk_buff *skb, const struct pkt4 *p, struct ct4_entry *ct,
			__u32 now)
{
	__be32 be_addr = ct->backend_addr;
	__be16 be_port = ct->backend_port;

	ct4_touch(ct, p, now);
	if (ct4_closes(p)) {
		struct ct4_key rk;

		ct4_reply_key_of(&rk, p, ct);
		struct ct4_entry *re = ct4_lookup(&rk);
		if (re && re->kind == CT_REPLY)
			ct4_close_peer(re, now);
		count(skb, REASON_CT_CLOSED);
	}
	if (ct->flags & CT_F_SNAT)
		return lb4_dnat_snat(skb, p, be_addr, be_port, ct->nat_addr, ct->nat_port,
				     REASON_ESTABLISHED);
	return lb4_dnat(skb, p, be_addr, be_port, REASON_ESTABLISHED);
}

/* A SYN on the tuple of a tracked flow: a retransmission while the flow is
 * live and neither side closed it, else a new connection reusing the tuple
 * (the client's port came round again after a close, or the flow expired).
 * A retransmission also makes sure the flow has its reply entry: without
 * it one direction only would be translated. */
__inline bool lb4_syn_retransmit(struct __sk_buff *skb, const struct pkt4 *p,
				 const struct ct4_entry *ct, __u32 now)
{
	struct ct4_key rk;

	if (ct4_closing(ct) || ct->expires < now)
		return false;
	ct4_reply_key_of(&rk, p, ct);
	struct ct4_entry *re = ct4_lookup(&rk);
	if (re)
		return re->kind != CT_REPLY || re->rev_nat_id != ct->rev_nat_id || !ct4_closing(re);

	struct ct4_entry rev = *ct;
	rev.backend_addr = 0;
	rev.backend_port = 0;
	rev.kind = CT_REPLY;
	rev.flags = ct->flags & CT_F_SNAT;
	rev.nat_addr = rev.flags ? p->saddr : 0;
	rev.nat_port = rev.flags ? p->sport : 0;
	rev.expires = now + ct_timeout(CT_TIMEOUT_TCP_SYN);
	if (!map_update(&ct4_v3, &rk, &rev, BPF_NOEXIST))
		count(skb, REASON_CT_REPAIRED);
	return true;
}

/* A flow's entries leave before another takes its tuple (a SYN on a closed
 * or expired flow, a backend that left): the old reply entry names the
 * old backend, and kept it would rewrite that backend's packets. */
__inline void lb4_forget_reply(const struct pkt4 *p, const struct ct4_entry *ct)
{
	struct ct4_key rk;

	ct4_reply_key_of(&rk, p, ct);
	map_delete(&ct4_v3, &rk);
}

/* Backend of slot 1..count of a frontend, picked uniformly at random; NULL
 * when the master entry counts a slot the map does not hold, or one naming
 * an inactive backend. */
__inline struct lb4_backend *lb4_pick(struct lb4_key *key, __u16 nslots, __u32 *backend_id)
{
	/* Multiply-shift maps the random word onto [0, count) without a
	 * division and with the same uniformity as a modulo. */
	key->backend_slot = 1 + (__u16)(((__u64)bpf_get_prandom_u32() * nslots) >> 32);
	struct lb4_service *slot = bpf_map_lookup_elem(&lb4_services, key);
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	struct lb4_backend *be = bpf_map_lookup_elem(&lb4_backends, backend_id);
	if (!be || !(be->flags & BE_F_ACTIVE))
		return NULL;
	return be;
}

/* The master entry a new flow from an internal source (this node's pods,
 * the node itself) or not gets: a two-scope frontend's scope 1 entries
 * for internal sources (rule 13). key's scope is left as the entry's, for
 * lb4_pick's slot lookups. Shared by the packet and socket paths. */
__inline struct lb4_service *lb4_scope_of(struct lb4_key *key, struct lb4_service *svc, bool internal)
{
	if (!internal || !(svc->flags & SVC_F_TWO_SCOPES))
		return svc;
	key->scope = LB_SCOPE_INTERNAL;
	struct lb4_service *in = bpf_map_lookup_elem(&lb4_services, key);
	if (in)
		return in;
	key->scope = LB_SCOPE_EXTERNAL;
	return svc;
}

/* What a new flow's backend choice leaves for lb4_choice_record: the
 * affinity entry it read (when the master asks for affinity). */
struct lb4_choice {
	struct lb4_affinity_key ak; /* zeroed on every path, for the verifier */
	struct lb4_affinity *sticky;
	__u64 ns;
	bool affinity;
};

/* Backend of a new flow from client to a master with backends: the
 * client's sticky one under session affinity while it is active, else one
 * of the slots at random. NULL: a slot the master counts is missing.
 * Shared by the packet and socket paths. */
__inline struct lb4_backend *lb4_choose(struct lb4_key *key, const struct lb4_service *svc,
					__be32 client, __u32 *backend_id, struct lb4_choice *c)
{
	struct lb4_backend *be = NULL;

	c->affinity = svc->flags & SVC_F_AFFINITY;
	if (c->affinity) {
		c->ak.affinity_id = svc->affinity_id;
		c->ak.client = client;
		c->ns = bpf_ktime_get_ns();
		c->sticky = lb4_affinity_sticky(&c->ak, svc->affinity_timeout, c->ns, backend_id);
		if (c->sticky) {
			be = bpf_map_lookup_elem(&lb4_backends, backend_id);
			if (!be || !(be->flags & BE_F_ACTIVE)) {
				be = NULL;
				c->sticky = NULL;
			}
		}
	}
	if (!be)
		be = lb4_pick(key, svc->count, backend_id);
	return be;
}

/* Records a new flow's choice for its client's next connections. */
__inline void lb4_choice_record(__u32 bytes, const struct lb4_choice *c, __u32 backend_id)
{
	if (c->affinity)
		lb4_affinity_record(bytes, &c->ak, c->sticky, backend_id, c->ns);
}

/* A SYN on a tuple conntrack holds: a retransmission of a live flow's SYN
 * follows it (its forward entry is returned); on a closed or expired flow,
 * or one whose backend left, the old flow's reply entry goes and NULL says
 * a new flow starts. */
__inline struct ct4_entry *lb4_syn_on_tracked(struct __sk_buff *skb, const struct pkt4 *p,
					      const struct ct4_key *ck, __u32 now)
{
	struct ct4_entry *ct = ct4_lookup(ck);

	if (!ct || ct->kind != CT_FORWARD)
		return NULL;
	if (!lb4_backend_matches(ct->backend_id, ct->backend_addr, ct->backend_port))
		count(skb, REASON_BACKEND_GONE);
	else if (lb4_syn_retransmit(skb, p, ct, now))
		return ct;
	else
		count(skb, REASON_CT_REOPENED);
	lb4_forget_reply(p, ct);
	return NULL;
}

/* The SNATed variant of a new flow (lb4_new_flow decided it): entries
 * with an allocated port, then DNAT, SNAT and forwarding. A SYN on a tuple
 * conntrack holds is sorted out first, as lb4_new_flow does after its
 * insert fails: a retransmission follows its flow, anything else removes
 * the old flow's reply entry before this one's are written. Deciding
 * before the port search keeps that loop in one place, which the
 * verifier walks once. */
__inline int lb4_new_snat_flow(struct __sk_buff *skb, const struct pkt4 *p, const struct ct4_key *ck,
			       const struct datapath_config *cfg, const struct lb4_backend *be,
			       __u32 backend_id, __u32 rev_nat_id, bool opening,
			       const struct lb4_choice *c, __u32 now)
{
	__be16 port = 0;

	if (!cfg || !cfg->node_addr4)
		return verdict_drop(skb, REASON_DROP_SNAT_NO_ADDRESS);
	if (p->frag)
		/* Its later fragments could not follow (lib/frag4.h). */
		return verdict_drop(skb, REASON_DROP_FRAGMENT);
	if (opening) {
		struct ct4_entry *ct = lb4_syn_on_tracked(skb, p, ck, now);
		if (ct)
			return lb4_follow(skb, p, ct, now);
	}
	int err = lb4_ct_create_snat(skb, ck, p, cfg, be, backend_id, rev_nat_id, now, BPF_ANY, &port);
	if (err == -ENOSPC)
		return verdict_drop(skb, REASON_DROP_SNAT_EXHAUSTED);
	if (err)
		return verdict_drop(skb, REASON_DROP_CT_FULL);
	lb4_choice_record(skb->len, c, backend_id);
	count(skb, REASON_SNAT);
	return lb4_dnat_snat(skb, p, be->address, be->port, cfg->node_addr4, port, REASON_NEW_FLOW);
}

/* New flow (or a flow whose backend left, or a SYN reopening a finished
 * flow's tuple) to a served frontend: pick a backend (the client's sticky
 * one under session affinity, else uniformly at random) and record the
 * flow. opening: a TCP SYN, whose conntrack lookup was skipped; its
 * forward entry is created only if absent, and a retransmitted SYN finds
 * its flow that way (and leaves affinity alone). */
__inline int lb4_new_flow(struct __sk_buff *skb, const struct pkt4 *p, struct lb4_key *key,
			  const struct lb4_service *svc, const struct ct4_key *ck, bool opening,
			  const struct datapath_config *cfg, __u32 now)
{
	__u16 nslots = svc->count;
	__u32 rev_nat_id = svc->rev_nat_id;
	__u8 flags = svc->flags;

	if (nslots == 0) {
		/* Endpoints exist, but none in the set the policy asks for
		 * (rule 14): dropped, not rejected. */
		if (flags & SVC_F_DROP_EMPTY)
			return verdict_drop(skb, REASON_DROP_NO_LOCAL_ENDPOINTS);
		return reject4(skb, REASON_REJECT_NO_ENDPOINTS);
	}

	struct lb4_choice c = {};
	__u32 backend_id;
	struct lb4_backend *be = lb4_choose(key, svc, p->saddr, &backend_id, &c);
	if (!be)
		return verdict_drop(skb, REASON_DROP_NO_BACKEND_SLOT);

	/* SNAT (rules 13, 25, 26): a hairpin flow, whose backend is its own
	 * client, and a flow of a frontend that asks for it to a backend on
	 * another node. */
	bool snat = be->address == p->saddr ||
		    ((flags & SVC_F_SNAT_REMOTE) && !(be->flags & BE_F_LOCAL));
	if (snat)
		return lb4_new_snat_flow(skb, p, ck, cfg, be, backend_id, rev_nat_id, opening, &c,
					 now);

	int err = lb4_ct_create(ck, p, be, backend_id, rev_nat_id, now,
				opening ? BPF_NOEXIST : BPF_ANY);
	if (err == -EEXIST) {
		struct ct4_entry *ct = lb4_syn_on_tracked(skb, p, ck, now);
		if (ct)
			return lb4_follow(skb, p, ct, now);
		err = lb4_ct_create(ck, p, be, backend_id, rev_nat_id, now, BPF_ANY);
	}
	if (err == -EBUSY)
		return verdict_drop(skb, REASON_DROP_CT_CLASH);
	if (err)
		return verdict_drop(skb, REASON_DROP_CT_FULL);
	lb4_choice_record(skb->len, &c, backend_id);
	return lb4_dnat(skb, p, be->address, be->port, REASON_NEW_FLOW);
}

/* A reply moves its entry on; the first one tells the forward entry that
 * the flow was answered, and a FIN or RST puts it on the close lifetime. */
__inline void lb4_reply_seen(struct __sk_buff *skb, const struct pkt4 *p, const struct ct4_key *ck,
			     struct ct4_entry *ct, __u32 now)
{
	bool closes = ct4_closes(p);

	ct4_touch(ct, p, now);
	if (!(ct->flags & CT_F_PEER_TOLD) || closes) {
		struct ct4_key fk;
		struct ct4_entry *fe = ct4_forward_of_reply(ck, ct, &fk);
		if (fe) {
			ct4_seen_reply(fe, p->proto, now);
			if (closes)
				ct4_close_peer(fe, now);
		}
		map_store(ct->flags, ct->flags | CT_F_PEER_TOLD);
		if (closes)
			count(skb, REASON_CT_CLOSED);
	}
}

/* Reply of a SNATed flow, at ingress: it comes from the backend to the
 * node's address and allocated port. Its destination is restored to the
 * client and its source to the frontend, and it is forwarded past the
 * stack: the frontend may be one of the node's own addresses. */
__inline int lb4_reverse_snat(struct __sk_buff *skb, const struct pkt4 *p, const struct ct4_key *ck,
			      struct ct4_entry *ct, __u32 now)
{
	__u32 id = ct->rev_nat_id;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &id);

	if (!rn || !rn->address)
		return verdict_pass(skb, REASON_REPLY_NO_REVNAT);
	__be32 vip = rn->address;
	__be16 vport = rn->port;
	__be32 client = ct->nat_addr;
	__be16 cport = ct->nat_port;

	if (p->frag)
		return verdict_drop(skb, REASON_DROP_FRAGMENT);
	lb4_reply_seen(skb, p, ck, ct, now);
	if (nat4_rewrite_both(skb, p, client, cport, vip, vport))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	return fib4_forward(skb, REASON_REPLY_SNAT);
}

/* Packet whose destination may be a service IP. Conntrack is looked up
 * first: an established flow needs nothing else (like kube-proxy's
 * conntrack, it outlives a change of its service while its backend
 * exists). A TCP SYN skips the lookup, which would miss for a new
 * connection: lb4_new_flow finds a retransmitted one. Returns LB4_NOT_SERVICE when the
 * destination is not a service IP after all. */
__inline int lb4_service(struct __sk_buff *skb, const struct pkt4 *p,
			  const struct datapath_config *cfg)
{
	bool opening = p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN;
	__u32 now = ct_now();
	struct ct4_key ck;
	bool gone = false;

	ct4_forward_key(&ck, p);
	if (!opening) {
		struct ct4_entry *ct = ct4_lookup(&ck);
		if (ct && ct->kind == CT_FORWARD) {
			if (lb4_backend_matches(ct->backend_id, ct->backend_addr, ct->backend_port))
				return lb4_follow(skb, p, ct, now);
			lb4_forget_reply(p, ct);
			gone = true;
		} else if (ct && (ct->flags & CT_F_SNAT)) {
			/* A reply of a SNATed flow, to the node's address
			 * (which also serves NodePorts). */
			return lb4_reverse_snat(skb, p, &ck, ct, now);
		}
	}

	struct lb4_key key = {
		.address = p->daddr,
		.dport = p->dport,
		.proto = p->proto,
	};
	struct lb4_service *svc = bpf_map_lookup_elem(&lb4_services, &key);
	if (svc) {
		if (gone)
			count(skb, REASON_BACKEND_GONE);
		if ((svc->flags & SVC_F_SOURCE_RANGES) && !lb4_source_allowed(svc->rev_nat_id, p->saddr))
			return verdict_drop(skb, REASON_DROP_SOURCE_RANGE);
		/* One call site: lb4_new_flow is inlined once. */
		svc = lb4_scope_of(&key, svc, (svc->flags & SVC_F_TWO_SCOPES) && lb4_internal_source(cfg, p->saddr));
		return lb4_new_flow(skb, p, &key, svc, &ck, opening, cfg, now);
	}
	if (lb4_is_service_ip(p->daddr))
		return reject4(skb, REASON_REJECT_UNKNOWN_PORT);
	return LB4_NOT_SERVICE;
}

/* Reply of a translated flow, on its way out to the client: the source is
 * restored to the frontend. This runs at egress, after the node routed and
 * filtered the packet as backend -> client, which is what netfilter's
 * conntrack and rp_filter saw the flow's forward packets as (they were
 * translated at ingress, before both). The first reply tells the forward
 * entry that the flow was answered; a FIN or RST puts it on the close
 * lifetime. Anything else passes. */
__inline int lb4_reverse(struct __sk_buff *skb, const struct pkt4 *p)
{
	struct ct4_key ck;

	ct4_flow_key(&ck, p->saddr, p->sport, p->daddr, p->dport, p->proto);
	struct ct4_entry *ct = ct4_lookup(&ck);

	if (!ct || ct->kind != CT_REPLY)
		return verdict_pass(skb, REASON_PASS);

	__u32 id = ct->rev_nat_id;
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &id);
	if (!rn || !rn->address)
		return verdict_pass(skb, REASON_REPLY_NO_REVNAT);
	__be32 vip = rn->address;
	__be16 vport = rn->port;

	lb4_reply_seen(skb, p, &ck, ct, ct_now());
	if (nat4_rewrite(skb, p, NAT_SRC, vip, vport))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	if (p->frag)
		frag4_remember(skb, p);
	return verdict_pass(skb, REASON_REPLY);
}

/* A packet straight to a backend's address and port whose tuple is the
 * reply tuple of a translated flow: the backend's answer would match that
 * flow's reply entry and leave rewritten to come from the frontend, which
 * a client now talking to the backend itself drops. A dead flow's entries
 * go at once (the collector would take them only later). A live one's go
 * on what opens a new flow on that tuple: a TCP SYN, or any UDP datagram.
 * For UDP the new flow wins because the client port was free for a new
 * socket, so the translated flow's socket is gone: a resolver's socket per
 * query, reusing a port within the 30 s an answered query's flow lives, is
 * the common case. Only one unconnected socket sending both to the frontend
 * and to its backend loses: its translated flow starts again with its next
 * datagram. (netfilter keeps both by moving the new flow to another source
 * port; at the backend the two are one tuple.) Other TCP segments belong
 * to a connection whose SYN passed here. */
__inline void lb4_forget_stale_reply(const struct __sk_buff *skb, const struct pkt4 *p)
{
	struct ct4_key rk, fk;

	ct4_reply_key(&rk, p, p->daddr, p->dport);
	struct ct4_entry *ct = ct4_lookup(&rk);
	if (!ct || ct->kind != CT_REPLY)
		return;
	bool opens = p->proto == IPPROTO_UDP ||
		     (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN;
	if (!opens && lb4_reply_live(&rk, ct, ct_now()))
		return;
	if (ct4_forward_of_reply(&rk, ct, &fk))
		map_delete(&ct4_v3, &fk);
	map_delete(&ct4_v3, &rk);
	count(skb, REASON_CT_STALE_REPLY);
}

/* Whether a packet the prefilter passed may be a SNATed flow's reply:
 * to the node's address, on a port of the SNAT range. */
__inline bool lb4_snat_reply_candidate(const struct datapath_config *cfg, const struct pkt4 *p)
{
	if (!cfg || !cfg->node_addr4 || p->daddr != cfg->node_addr4)
		return false;
	__u32 port = bpf_ntohs(p->dport), lo, hi;
	snat4_range(cfg, &lo, &hi);
	return port >= lo && port <= hi;
}

/* Ingress: service traffic is translated to its backend. */
__inline int lb4_handle_ingress(struct __sk_buff *skb, const struct pkt4 *p)
{
	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);
	struct datapath_config *cfg = dp_config();

	if (!f || lb4_filter_has(f, lb4_filter_dst(p->daddr))) {
		int ret = lb4_service(skb, p, cfg);
		if (ret != LB4_NOT_SERVICE)
			return ret;
	} else if (lb4_snat_reply_candidate(cfg, p)) {
		struct ct4_key ck;

		ct4_forward_key(&ck, p);
		struct ct4_entry *ct = ct4_lookup(&ck);
		if (ct && ct->kind == CT_REPLY && (ct->flags & CT_F_SNAT))
			return lb4_reverse_snat(skb, p, &ck, ct, ct_now());
	}
	if (in_service_cidr(cfg, p->daddr))
		return verdict_drop(skb, REASON_DROP_SERVICE_CIDR);
	/* TCP segments other than a SYN need no check: the SYN that opened
	 * their connection had it. */
	bool check = p->proto != IPPROTO_TCP || (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN;
	if (check && (!f || lb4_filter_has(f, lb4_filter_src(p->daddr, p->dport, p->proto))))
		lb4_forget_stale_reply(skb, p);
	return verdict_pass(skb, REASON_PASS);
}

/* Egress: replies of translated flows are translated back. */
__inline int lb4_handle_egress(struct __sk_buff *skb, const struct pkt4 *p)
{
	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);

	if (!f || lb4_filter_has(f, lb4_filter_src(p->saddr, p->sport, p->proto)))
		return lb4_reverse(skb, p);
	return verdict_pass(skb, REASON_PASS);
}

/* Fragments and packets with IP options are not translated: dropped when
 * addressed to a service IP (they could never reach a backend intact),
 * passed otherwise. */
__inline int lb4_handle_untranslatable(struct __sk_buff *skb, const struct pkt4 *p, __u32 reason)
{
	if (!lb4_is_service_ip(p->daddr))
		return verdict_pass(skb, REASON_PASS);
	return verdict_drop(skb, reason);
}

/* Ingress, a fragment after the first (lib/frag4.h): translated as its
 * first fragment was. Without a tracked first fragment it cannot be: to a
 * service IP it is dropped, as it could never be reassembled at a backend;
 * anything else passes untouched. */
__inline int lb4_handle_later_fragment(struct __sk_buff *skb, struct pkt4 *p)
{
	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);

	if (f && !lb4_filter_has(f, lb4_filter_dst(p->daddr)))
		return verdict_pass(skb, REASON_PASS);
	int ret = frag4_forward(skb, p);
	if (ret != FRAG4_UNTRACKED)
		return ret;
	return lb4_handle_untranslatable(skb, p, REASON_DROP_FRAG_UNTRACKED);
}

/* Egress, a fragment after the first: a reply's is translated as its
 * first fragment was. An untracked one passes: without its ports it
 * cannot be told from a backend pod's own traffic to the same client, and
 * a reply's fragment whose first went by untranslated (reordered, or
 * lost) loses its datagram whether dropped or passed. */
__inline int lb4_handle_egress_later_fragment(struct __sk_buff *skb, struct pkt4 *p)
{
	int ret = frag4_reverse(skb, p);

	if (ret != FRAG4_UNTRACKED)
		return ret;
	return verdict_pass(skb, REASON_PASS);
}

#endif
