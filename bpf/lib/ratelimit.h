/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Rate of the ICMP errors REJECT sends: a token bucket per CPU, as the
 * kernel limits its own ICMP errors (RFC 1812 4.3.2.8). A client hammering
 * a service without endpoints, or a spoofed flood, then costs the node a
 * bounded number of replies per second and cannot turn it into a
 * reflector. Per CPU, so the check takes no lock and touches no shared
 * cache line; the node's total is the rate times the CPUs that receive. */
#ifndef __SLUICE_RATELIMIT_H
#define __SLUICE_RATELIMIT_H

#include "common.h"
#include "maps.h"

/* Whether one more ICMP error may go now. The bucket holds credit in
 * nanoseconds: it refills with the time that passed, up to burst errors'
 * worth, and an error takes 1e9 / rate of it. A zeroed bucket (the map's
 * initial state) is full. A last refill later than now (a clock that
 * another CPU's or a test's write put ahead) refills nothing. */
__inline bool reject_allowed(void)
{
	__u32 zero = 0;
	struct reject_ratelimit *cfg = bpf_map_lookup_elem(&sluice_reject_rate, &zero);
	struct reject_bucket *b = bpf_map_lookup_elem(&sluice_reject_bucket, &zero);
	__u64 rate = REJECT_DEFAULT_RATE, burst = REJECT_DEFAULT_BURST;

	if (!b)
		return false;
	if (cfg && cfg->rate)
		rate = cfg->rate;
	if (cfg && cfg->burst)
		burst = cfg->burst;

	__u64 cost = NSEC_PER_SEC / rate;
	__u64 cap = burst * cost;
	__u64 now = bpf_ktime_get_ns();
	__u64 credit = b->credit_ns;

	if (now > b->last_ns) {
		__u64 idle = now - b->last_ns;
		credit = idle >= cap || credit >= cap - idle ? cap : credit + idle;
		map_store(b->last_ns, now);
	}
	if (credit < cost) {
		map_store(b->credit_ns, credit);
		return false;
	}
	map_store(b->credit_ns, credit - cost);
	return true;
}

#endif
