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

__inline bool lb4_is_service_ip(__be32 addr)
{
	struct lb4_key k = { .address = addr };

	return bpf_map_lookup_elem(&lb4_services, &k) != NULL;
}

__inline bool in_service_cidr(__be32 addr)
{
	__u32 zero = 0;
	struct datapath_config *cfg = bpf_map_lookup_elem(&sluice_config, &zero);

	return cfg && cfg->service_cidr4_mask &&
	       (addr & cfg->service_cidr4_mask) == cfg->service_cidr4;
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
	return verdict_pass(skb, reason);
}

/* A TCP RST ends a translated flow at once: its entries go, so that the
 * client port can be reused, even straight to the backend, without the
 * old reply entry capturing the new connection's packets. */
__inline void lb4_close_flow(const struct __sk_buff *skb, const struct pkt4 *p,
			     const struct ct4_key *fwd, __be32 be_addr, __be16 be_port)
{
	struct ct4_key rk;

	ct4_reply_key(&rk, p, be_addr, be_port);
	ct4_delete_flow(fwd, &rk);
	count(skb, REASON_CT_CLOSED);
}

/* Forward packet of a tracked flow: DNAT to its backend while that still
 * exists; -1 when it is gone. */
__inline int lb4_follow(struct __sk_buff *skb, const struct pkt4 *p, const struct ct4_key *ck,
			const struct ct4_entry *ct)
{
	__be32 be_addr = ct->backend_addr;
	__be16 be_port = ct->backend_port;

	if (!lb4_backend_matches(ct->backend_id, be_addr, be_port))
		return -1;
	if (p->tcp_flags & TCP_F_RST)
		lb4_close_flow(skb, p, ck, be_addr, be_port);
	return lb4_dnat(skb, p, be_addr, be_port, REASON_ESTABLISHED);
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

/* New flow (or a flow whose backend left) to a served frontend: pick a
 * backend (the client's sticky one under session affinity, else uniformly
 * at random) and record the flow. opening: a TCP SYN, whose conntrack
 * lookup was skipped; its forward entry is created only if absent, and a
 * retransmitted SYN finds its flow that way (and leaves affinity alone). */
__inline int lb4_new_flow(struct __sk_buff *skb, const struct pkt4 *p, struct lb4_key *key,
			  const struct lb4_service *svc, const struct ct4_key *ck, bool opening)
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

	struct lb4_backend *be = NULL;
	struct lb4_affinity *sticky = NULL;
	struct lb4_affinity_key ak = {}; /* initialized on every path, for the verifier */
	__u32 backend_id;
	__u64 now = 0;

	if (flags & SVC_F_AFFINITY) {
		ak.affinity_id = svc->affinity_id;
		ak.client = p->saddr;
		now = bpf_ktime_get_ns();
		sticky = lb4_affinity_sticky(&ak, svc->affinity_timeout, now, &backend_id);
		if (sticky) {
			be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
			if (!be || !(be->flags & BE_F_ACTIVE)) {
				be = NULL;
				sticky = NULL;
			}
		}
	}
	if (!be) {
		be = lb4_pick(key, nslots, &backend_id);
		if (!be)
			return verdict_drop(skb, REASON_DROP_NO_BACKEND_SLOT);
	}

	int err = ct4_create(ck, p, be, backend_id, rev_nat_id, opening ? BPF_NOEXIST : BPF_ANY);
	if (err == -EEXIST) {
		struct ct4_entry *ct = ct4_lookup(ck);
		if (ct && ct->kind == CT_FORWARD) {
			int ret = lb4_follow(skb, p, ck, ct);
			if (ret >= 0)
				return ret;
			count(skb, REASON_BACKEND_GONE);
		}
		err = ct4_create(ck, p, be, backend_id, rev_nat_id, BPF_ANY);
	}
	if (err)
		return verdict_drop(skb, REASON_DROP_CT_FULL);
	if (flags & SVC_F_AFFINITY)
		lb4_affinity_record(skb, &ak, sticky, backend_id, now);
	return lb4_dnat(skb, p, be->address, be->port, REASON_NEW_FLOW);
}

/* Packet whose destination may be a service IP. Conntrack is looked up
 * first: an established flow needs nothing else (like kube-proxy's
 * conntrack, it outlives a change of its service while its backend
 * exists). A TCP SYN skips the lookup, which would miss for a new
 * connection: lb4_new_flow finds a retransmitted one. Returns -1 when the
 * destination is not a service IP after all. */
__inline int lb4_service(struct __sk_buff *skb, const struct pkt4 *p)
{
	bool opening = p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN;
	struct ct4_key ck;
	bool gone = false;

	ct4_forward_key(&ck, p);
	if (!opening) {
		struct ct4_entry *ct = ct4_lookup(&ck);
		if (ct && ct->kind == CT_FORWARD) {
			int ret = lb4_follow(skb, p, &ck, ct);
			if (ret >= 0)
				return ret;
			gone = true;
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
		return lb4_new_flow(skb, p, &key, svc, &ck, opening);
	}
	if (lb4_is_service_ip(p->daddr))
		return reject4(skb, REASON_REJECT_UNKNOWN_PORT);
	return -1;
}

/* Removes a flow known by its reply entry. The forward entry goes too
 * (without its reply it could only translate half a connection); its key is
 * the reply's client and the flow's frontend. */
__inline void lb4_delete_flow_of_reply(const struct ct4_key *rk, __u32 rev_nat_id)
{
	struct lb4_reverse_nat *rn = bpf_map_lookup_elem(&lb4_revnat, &rev_nat_id);
	struct ct4_key fk;

	if (rn) {
		ct4_flow_key(&fk, rk->daddr, rk->dport, rn->address, rn->port, rk->proto);
		bpf_map_delete_elem(&ct4, &fk);
	}
	bpf_map_delete_elem(&ct4, rk);
}

/* Not addressed to a frontend: a reply of a translated flow gets its source
 * restored to the frontend; anything else passes. */
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
	if (p->tcp_flags & TCP_F_RST) {
		lb4_delete_flow_of_reply(&ck, id);
		count(skb, REASON_CT_CLOSED);
	}
	if (nat4_rewrite(skb, p, NAT_SRC, vip, vport))
		return verdict_drop(skb, REASON_DROP_NAT_FAILED);
	return verdict_pass(skb, REASON_REPLY);
}

/* A SYN straight to a backend whose 4-tuple is that of a finished
 * translated flow: that flow's entries go (see lb4_handle). */
__inline void lb4_forget_stale_reply(const struct __sk_buff *skb, const struct pkt4 *p)
{
	struct ct4_key rk;

	ct4_reply_key(&rk, p, p->daddr, p->dport);
	struct ct4_entry *ct = ct4_lookup(&rk);
	if (!ct || ct->kind != CT_REPLY)
		return;
	lb4_delete_flow_of_reply(&rk, ct->rev_nat_id);
	count(skb, REASON_CT_STALE_REPLY);
}

__inline int lb4_handle(struct __sk_buff *skb, const struct pkt4 *p)
{
	__u32 zero = 0;
	struct lb4_filter *f = bpf_map_lookup_elem(&lb4_prefilter, &zero);

	if (!f || lb4_filter_has(f, lb4_filter_dst(p->daddr))) {
		int ret = lb4_service(skb, p);
		if (ret >= 0)
			return ret;
	}
	if (in_service_cidr(p->daddr))
		return verdict_drop(skb, REASON_DROP_SERVICE_CIDR);
	if (!f || lb4_filter_has(f, lb4_filter_src(p->saddr, p->sport, p->proto)))
		return lb4_reverse(skb, p);
	/* A connection opened straight to a backend's address and port may
	 * reuse the 4-tuple of a finished translated flow: the backend's
	 * answer would then match the old reply entry and be rewritten. */
	if ((p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN &&
	    (!f || lb4_filter_has(f, lb4_filter_src(p->daddr, p->dport, p->proto))))
		lb4_forget_stale_reply(skb, p);
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

#endif
