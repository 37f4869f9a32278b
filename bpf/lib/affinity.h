/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ClientIP session affinity (rule 22). Per affinity scope (a service port,
 * shared by its frontends) and client address, lb4_affinity holds the
 * backend of the client's last new connection and when it was made. A new
 * connection goes back to that backend while the entry is younger than the
 * scope's timeout and the backend is still in the set that applies, which
 * the control plane states in lb4_affinity_match (slot positions move,
 * backend ids do not). Established flows never read it: conntrack keeps
 * them on their backend. */
#ifndef __SLUICE_AFFINITY_H
#define __SLUICE_AFFINITY_H

#include "common.h"
#include "maps.h"
#include "counters.h"

/* The client's entry if its backend may be used: present, not expired, and
 * the backend still in the scope's set. *backend_id is the backend then. The
 * caller still checks that the backend is active. */
__inline struct lb4_affinity *lb4_affinity_sticky(const struct lb4_affinity_key *k, __u32 timeout,
						  __u64 now, __u32 *backend_id)
{
	struct lb4_affinity *a = bpf_map_lookup_elem(&lb4_affinity, k);

	if (!a)
		return NULL;
	/* An entry from the future (now < last_used) wraps to a huge age:
	 * expired. */
	if (now - a->last_used > (__u64)timeout * NSEC_PER_SEC)
		return NULL;
	struct lb4_affinity_match_key mk = {
		.backend_id = a->backend_id,
		.affinity_id = k->affinity_id,
	};
	if (!bpf_map_lookup_elem(&lb4_affinity_match, &mk))
		return NULL;
	*backend_id = mk.backend_id; /* as checked, even if the entry changes now */
	return a;
}

/* After a new flow was created: a hit refreshes its entry's time in place
 * (a plain store, no helper call), a miss writes the client's new backend.
 * A failed write loses only the stickiness of the client's next connection,
 * so the packet goes on; the event is counted, since it breaks rule 22. */
/* bytes: what the counters add (the packet's length; 0 for a socket). */
__inline void lb4_affinity_record(__u32 bytes, const struct lb4_affinity_key *k,
				  struct lb4_affinity *hit, __u32 backend_id, __u64 now)
{
	if (hit) {
		map_store(hit->last_used, now);
		count_bytes(REASON_AFFINITY_HIT, bytes);
		return;
	}
	struct lb4_affinity v = { .last_used = now, .backend_id = backend_id };
	if (map_update(&lb4_affinity, k, &v, BPF_ANY))
		count_bytes(REASON_AFFINITY_WRITE_FAILED, bytes);
}

#endif
