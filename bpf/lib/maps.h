/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the datapath. All are pinned by name under the agent's pin
 * directory, so a restarted agent adopts them and the datapath keeps its
 * state. Sizes are defaults; the loader may override max_entries. */
#ifndef __SLUICE_MAPS_H
#define __SLUICE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

#ifndef LB4_SERVICES_MAX
#define LB4_SERVICES_MAX 262144
#endif
#ifndef LB4_BACKENDS_MAX
#define LB4_BACKENDS_MAX 262144
#endif
#ifndef LB4_REVNAT_MAX
#define LB4_REVNAT_MAX 262144
#endif
#ifndef CT4_MAX
#define CT4_MAX 262144
#endif
#ifndef LB4_AFFINITY_MAX
#define LB4_AFFINITY_MAX 65536
#endif
#ifndef LB4_FRAGMENTS_MAX
#define LB4_FRAGMENTS_MAX 8192
#endif

/* Frontends: master, backend-slot and address-marker entries (types.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB4_SERVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_services SEC(".maps");

/* Backends by id. An array, so the per-packet "does the backend of this
 * flow still exist" check is an inlined index, not a hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB4_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_backends SEC(".maps");

/* Frontend address:port a reply's source is restored to, by rev_nat_id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, LB4_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_revnat SEC(".maps");

/* Conntrack of translated flows, one entry per direction (lib/conntrack.h).
 * A plain hash, not an LRU: a full table refuses new flows (counted) and
 * never evicts a live one; the agent removes flows whose entries have both
 * expired. Preallocated, so an insert takes an element from a per-CPU free
 * list (stealing from other CPUs' when its own is empty) without a global
 * lock. The name carries the layout version of struct ct4_entry: a pinned
 * map of an older version is migrated by the loader, not misread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, CT4_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct4_v3 SEC(".maps");

/* Sources allowed to open flows to a load-balancer frontend whose master
 * has SVC_F_SOURCE_RANGES (rule 21), written by the control plane. */
#ifndef LB4_SOURCE_RANGES_MAX
#define LB4_SOURCE_RANGES_MAX 16384
#endif
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lb4_src_range_key);
	__type(value, __u8);
	__uint(max_entries, LB4_SOURCE_RANGES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_source_ranges SEC(".maps");

/* Session affinity: the backend of each client's last new connection, per
 * affinity scope (lib/affinity.h). Written by the datapath only. LRU, so
 * the oldest clients go when it is full; a common LRU list, since a
 * client's next connection may arrive on any CPU and must find its entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, LB4_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_affinity SEC(".maps");

/* Backends currently in the set of an affinity scope, written by the
 * control plane: a sticky backend is used only while it has an entry here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_affinity_match_key);
	__type(value, __u8);
	__uint(max_entries, LB4_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_affinity_match SEC(".maps");

/* Ports of fragmented datagrams in flight, by the fields their fragments
 * share (lib/frag4.h). Written by the datapath only, by a first fragment
 * it translated; an entry is needed only until its datagram's last
 * fragment went by, microseconds to milliseconds later, so it is never
 * deleted: the LRU drops it. 8192 datagrams in flight at once is more
 * than a node's own reassembly holds (ipfrag_high_thresh, 4 MiB: about a
 * thousand 4 KiB datagrams); an entry evicted early loses its one
 * datagram, as a full reassembly queue would. A common LRU list, not
 * per-CPU: a datagram's fragments may be handled on different CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag4_key);
	__type(value, struct frag4_ports);
	__uint(max_entries, LB4_FRAGMENTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_fragments SEC(".maps");

#ifndef LB4_SOCK_MAX
#define LB4_SOCK_MAX 65536
#endif
/* Frontend of a translated socket, by cookie and backend (lib/sock4.h),
 * written by the socket programs at connect and send time, read by
 * recvmsg and getpeername. LRU: sockets close without telling, and their
 * entries go as the oldest; an entry evicted under a live socket only
 * makes its replies show the backend (counted nowhere: a lookup miss
 * is also every untranslated socket's). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_revnat_key);
	__type(value, struct lb4_sock_revnat_entry);
	__uint(max_entries, LB4_SOCK_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_sock_revnat SEC(".maps");

/* Backend of an unconnected UDP socket, by cookie and frontend
 * (lib/sock4.h), so its datagrams stay on one backend. LRU, as above. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_backend_key);
	__type(value, struct lb4_sock_backend);
	__uint(max_entries, LB4_SOCK_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_sock_backend SEC(".maps");

/* The prefilter bitmap (struct lb4_filter in types.h), one entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb4_filter);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_prefilter SEC(".maps");

#ifndef L2_ANNOUNCE4_MAX
#define L2_ANNOUNCE4_MAX 4096
#endif
/* Load-balancer addresses this node answers ARP for, by device
 * (lib/arp4.h), written by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct l2_announce4_key);
	__type(value, struct l2_announce4);
	__uint(max_entries, L2_ANNOUNCE4_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} l2_announce4 SEC(".maps");

/* Packets and bytes by enum reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum reason);
	__type(value, struct counter);
	__uint(max_entries, REASON_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_counters SEC(".maps");

/* Conntrack lifetimes in seconds by enum ct_timeout, written by the agent
 * at start; 0 keeps the datapath's default. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, enum ct_timeout);
	__type(value, __u32);
	__uint(max_entries, CT_TIMEOUT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_ct_timeouts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_config SEC(".maps");


/* REJECT's ICMP error rate and burst (struct reject_ratelimit), written
 * by the agent at start. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct reject_ratelimit);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_reject_rate SEC(".maps");

/* REJECT's token bucket, one per CPU: no CPU waits on another's. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct reject_bucket);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_reject_bucket SEC(".maps");

#endif
