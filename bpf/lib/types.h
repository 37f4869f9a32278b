/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every struct and enum shared between the datapath and the Go control
 * plane. bpf2go generates the Go types from these (gen.go lists them with
 * -type), so no byte layout is ever written twice.
 *
 * IPv4 structures carry a "4" in their name; IPv6 will get lb6_* and ct6_*
 * siblings with the same shape rather than a wider key here. */
#ifndef __SLUICE_TYPES_H
#define __SLUICE_TYPES_H

#include <linux/types.h>

/* Frontend key. Three kinds of entry share the lb4_services map:
 *  - master:  {vip, port, proto, slot 0}    -> count of backend slots
 *  - slot:    {vip, port, proto, slot 1..n} -> backend id
 *  - marker:  {vip, 0, 0, slot 0}           -> "this address is an active
 *    service IP", so a packet to an unserved port is rejected, not passed. */
struct lb4_key {
	__be32 address;
	__be16 dport;
	__u16 backend_slot;
	__u8 proto;
	__u8 scope; /* enum lb_scope */
	__u8 pad[2];
};

/* Which sources a frontend's entries serve. Most frontends have one set of
 * entries, scope 0, for every source. A frontend whose set depends on where
 * the client is (externalTrafficPolicy: Local, rule 13) has a second set:
 * scope 0 holds the Local set external clients get, and its master is
 * flagged SVC_F_TWO_SCOPES; scope 1 holds the Cluster set that this node's
 * own pods and the node itself get. */
enum lb_scope : __u8 {
	LB_SCOPE_EXTERNAL = 0,
	LB_SCOPE_INTERNAL = 1,
};

/* What kind of frontend a master entry is (listing and metrics; the
 * datapath acts on the flags). */
enum lb_frontend_kind : __u8 {
	FE_CLUSTER_IP = 0,
	FE_NODE_PORT,
	FE_EXTERNAL_IP,
	FE_LOAD_BALANCER,
};

enum lb_service_flags : __u8 {
	SVC_F_MARKER = 1 << 0,     /* address-only entry of an active service IP */
	SVC_F_DROP_EMPTY = 1 << 1, /* master entry: no usable endpoint in the set that
				    * applies: drop, do not reject */
	SVC_F_AFFINITY = 1 << 2,   /* master entry: ClientIP session affinity */
	SVC_F_SNAT_REMOTE = 1 << 3, /* master entry: a new flow to a backend on another
				     * node is SNATed to the node's address, so that its
				     * replies come back here (rules 13, 26) */
	SVC_F_TWO_SCOPES = 1 << 4, /* master entry of scope 0: this node's pods and the
				    * node itself use the scope 1 entries (rule 13) */
	SVC_F_SOURCE_RANGES = 1 << 5, /* master entry: new flows only from the frontend's
				       * lb4_source_ranges (rule 21) */
};

struct lb4_service {
	__u32 backend_id;  /* slot entry: the backend; master entry: 0 */
	__u32 rev_nat_id;  /* master entry: index into lb4_revnat */
	__u16 count;       /* master entry: number of backend slots (0 = no endpoints) */
	enum lb_service_flags flags;
	enum lb_frontend_kind kind; /* master entry */
	__u32 affinity_timeout; /* master entry with SVC_F_AFFINITY: seconds */
	__u32 affinity_id; /* master entry with SVC_F_AFFINITY: the service port's
			    * affinity scope (shared by its frontends) */
};

/* Session affinity (rule 22), per service port and client address. Key and
 * value of lb4_affinity, which only the datapath writes. */
struct lb4_affinity_key {
	__u32 affinity_id;
	__be32 client;
};

struct lb4_affinity {
	__u64 last_used; /* bpf_ktime_get_ns of the client's last new connection */
	__u32 backend_id;
	__u32 pad;
};

/* Key of lb4_affinity_match, which the control plane writes: one entry
 * (value 1) per backend currently in the set of an affinity service port.
 * A sticky backend without one is no longer in that set. */
struct lb4_affinity_match_key {
	__u32 backend_id;
	__u32 affinity_id;
};

enum lb_backend_flags : __u8 {
	BE_F_ACTIVE = 1 << 0, /* the array slot holds a programmed backend */
	BE_F_LOCAL = 1 << 1,  /* the endpoint is on this node (its nodeName is this node's) */
};

/* Value of lb4_backends, an array indexed by backend id. */
struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	enum lb_backend_flags flags;
};

/* Value of lb4_revnat, an array indexed by rev_nat_id: the frontend a
 * reply's source is rewritten back to. */
struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16 pad;
};

/* Socket-level translation (lib/sock4.h). A connect or an unconnected
 * send of the node's own sockets to a frontend goes straight to a backend;
 * lb4_sock_revnat then tells recvmsg and getpeername which frontend that
 * socket meant, so the application sees the address it used. Keyed by
 * the socket's cookie (unique for the boot, never reused) and the
 * backend. */
struct lb4_sock_revnat_key {
	__u64 cookie;
	__be32 address; /* backend */
	__be16 port;
	__u8 pad[2];
};

struct lb4_sock_revnat_entry {
	__be32 address; /* frontend */
	__be16 port;
	__u16 pad;
	__u32 rev_nat_id;
};

/* The backend an unconnected UDP socket's datagrams to one frontend go
 * to, as a pod's datagrams follow their conntrack flow: by socket cookie
 * and frontend. Used while the backend still holds that id. */
struct lb4_sock_backend_key {
	__u64 cookie;
	__be32 address; /* frontend */
	__be16 port;
	__u8 pad[2];
};

struct lb4_sock_backend {
	__u32 backend_id;
	__be32 address;
	__be16 port;
	__u16 pad;
};

/* Conntrack key: the packet's own 5-tuple as it arrives, so one lookup finds
 * both a forward entry (client -> VIP, at ingress) and a reply entry
 * (backend -> client, at egress). */
struct ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

enum ct_kind : __u8 {
	CT_FORWARD = 1, /* client -> VIP: DNAT to the recorded backend */
	CT_REPLY = 2,   /* backend -> client: SNAT back to the frontend */
};

/* What an entry has seen of its flow. Each direction keeps its own; the
 * forward entry also learns from the reply path what it cannot see. */
enum ct_flags : __u8 {
	CT_F_SEEN_REPLY = 1 << 0, /* forward: the backend answered (set from the reply path) */
	CT_F_FIN = 1 << 1,        /* this direction sent a FIN */
	CT_F_RST = 1 << 2,        /* a RST was seen in this direction; undone by a later
				   * segment without one (an out-of-window RST) */
	CT_F_PEER_TOLD = 1 << 3,  /* reply: the forward entry has been given CT_F_SEEN_REPLY */
	CT_F_SNAT = 1 << 4,       /* both: the flow's source is translated too (nat_addr) */
};

/* Lifetimes, the key of sluice_ct_timeouts (value: seconds, 0 = default). A flow
 * lives while either of its entries does: each packet moves its own
 * entry's expiry to now + the lifetime of the state it leaves the flow in.
 * The agent removes a flow once both entries have expired. */
enum ct_timeout {
	CT_TIMEOUT_TCP_SYN = 0,     /* TCP before the backend answered, or picked up mid-stream */
	CT_TIMEOUT_TCP_ESTABLISHED, /* TCP both ways */
	CT_TIMEOUT_TCP_CLOSE,       /* after FIN or RST */
	CT_TIMEOUT_UDP,             /* UDP (and anything else) not answered yet, or answered
	                             * within its first seconds (ct4_udp_stream) */
	CT_TIMEOUT_UDP_REPLIED,     /* UDP answered by the backend and lasting: a stream */
	CT_TIMEOUT_MAX,
};

/* Defaults of the lifetimes, in seconds, when the agent sets none: as
 * netfilter's, with kube-proxy's established timeout. The agent's flags
 * default to the same (a datapath test checks both agree). */
enum ct_timeout_default {
	CT_DEFAULT_TCP_SYN = 60,
	CT_DEFAULT_TCP_ESTABLISHED = 86400,
	CT_DEFAULT_TCP_CLOSE = 10,
	CT_DEFAULT_UDP = 30,
	CT_DEFAULT_UDP_REPLIED = 120,
};

/* A UDP flow answered after it has lasted more than this many seconds is
 * a stream, with the stream lifetime (lib/conntrack.h, ct4_udp_stream). */
enum ct_udp_stream {
	CT_UDP_STREAM_AFTER = 2,
};

struct ct4_entry {
	__be32 backend_addr; /* forward: translated destination */
	__be16 backend_port;
	enum ct_kind kind;
	enum ct_flags flags;
	__u32 rev_nat_id;    /* both: the frontend of the flow */
	__u32 backend_id;    /* forward: checked against lb4_backends on every packet */
	__u32 expires;       /* this direction is idle after this, in seconds of
			      * CLOCK_MONOTONIC (bpf_ktime_get_ns() / 1e9) */
	__u32 created;       /* when the flow was created, same clock */
	/* CT_F_SNAT flows only. Forward: the source the flow's packets leave
	 * with (the node's address and a port sluice allocated). Reply: the
	 * client's own address and port, which replies arriving at the node's
	 * address are sent back to. A reply entry of a SNAT flow is keyed by
	 * backend -> node address and port. */
	__be32 nat_addr;
	__be16 nat_port;
	__u8 pad[2];
};

/* Why a packet took the path it took. Each value is a per-CPU counter
 * (packets and bytes) in sluice_counters; the CLI and metrics name them. */
enum reason {
	REASON_PASS = 0,             /* not service traffic: untouched */
	REASON_NEW_FLOW,             /* forward: new flow, backend chosen, DNAT */
	REASON_ESTABLISHED,          /* forward: conntrack hit, DNAT to the same backend */
	REASON_REPLY,                /* reply of a translated flow: reverse NAT */
	REASON_BACKEND_GONE,         /* conntrack pointed at a removed backend: reselected */
	REASON_CT_CLOSED,            /* event: a TCP RST ended a flow, its entries were removed */
	REASON_CT_STALE_REPLY,       /* event: a direct connection or datagram to a backend
				      * took over the 4-tuple of a translated flow (finished,
				      * or ended by the new one), whose entries were removed */
	REASON_REPLY_NO_REVNAT,      /* reply whose frontend is gone: passed untouched */
	REASON_REJECT_NO_ENDPOINTS,  /* service port without endpoints: ICMP unreachable */
	REASON_REJECT_UNKNOWN_PORT,  /* service IP, port/proto not served: ICMP unreachable */
	REASON_DROP_SERVICE_CIDR,    /* unallocated address inside the service CIDR */
	REASON_DROP_MALFORMED_IP,    /* bad version, header length or truncated IPv4 header */
	REASON_DROP_MALFORMED_L4,    /* TCP/UDP header shorter than its fixed part */
	REASON_DROP_FRAGMENT,        /* IPv4 fragment to a service IP (not reassembled) */
	REASON_DROP_IP_OPTIONS,      /* IPv4 options on a packet to a service IP */
	REASON_DROP_NO_BACKEND_SLOT, /* master entry counts a slot that is missing */
	REASON_DROP_CT_FULL,         /* conntrack insert failed */
	REASON_DROP_NAT_FAILED,      /* a rewrite helper failed */
	REASON_DROP_REJECT_FAILED,   /* the ICMP error could not be built */
	/* New reasons go here, before REASON_MAX: a counter's index keeps its
	 * meaning across versions. */
	REASON_DROP_NO_LOCAL_ENDPOINTS, /* service port whose policy's endpoint set is empty
					 * (internalTrafficPolicy Local): dropped */
	REASON_AFFINITY_HIT,         /* event: a new flow went to its client's sticky backend */
	REASON_AFFINITY_WRITE_FAILED, /* event: a new flow's affinity entry could not be
				       * written (the flow was translated; the client is
				       * not sticky until its next new connection) */
	REASON_DROP_CT_CLASH,        /* a new flow's reply tuple belongs to a live flow of
				      * another frontend (one client port to two frontends
				      * sharing a backend): refused, never mis-translated */
	REASON_CT_REPAIRED,          /* event: a flow missing its reply entry got it back */
	REASON_CT_REOPENED,          /* event: a SYN on a closed or expired flow's tuple
				      * started a new flow */
	REASON_FRAGMENT,             /* fragment of a translated flow, translated */
	REASON_DROP_FRAG_UNTRACKED,  /* later fragment to a service IP or from a backend
				      * whose first fragment was not seen */
	REASON_ICMP_ERROR_TO_BACKEND, /* ICMP error quoting a reply, to a frontend:
				       * translated to the backend */
	REASON_ICMP_ERROR_TO_CLIENT, /* ICMP error quoting a translated forward packet:
				      * translated back to the frontend */
	REASON_DROP_ICMP_ERROR,      /* ICMP error about a translated flow that could not
				      * be translated (quote cut short, rewrite failed) */
	REASON_REJECT_RATE_LIMITED,  /* would have been rejected, over the ICMP rate: dropped */
	REASON_DROP_NO_ANSWER,       /* would have been rejected, but is a RST, an ICMP error,
				      * or from a broadcast, multicast or zero source
				      * (RFC 1122 3.2.2): dropped without an answer */
	REASON_DROP_SOURCE_RANGE,    /* new connection to a load-balancer IP from outside its
				      * loadBalancerSourceRanges (rule 21) */
	REASON_SNAT,                 /* event: a new flow's source was translated to the
				      * node's address (remote backend, or hairpin) */
	REASON_REPLY_SNAT,           /* reply of a SNATed flow, to the node's address:
				      * translated back and forwarded to the client */
	REASON_DROP_SNAT_EXHAUSTED,  /* a new flow needed SNAT and no port of the range
				      * was free */
	REASON_DROP_SNAT_NO_ADDRESS, /* a new flow needed SNAT and the node has no address
				      * to translate to */
	REASON_DROP_FIB,             /* a SNATed packet could not be forwarded: no route,
				      * forwarding off, or TTL exceeded */
	/* Socket-level translation of the node's own sockets (lib/sock4.h):
	 * one count per call, no bytes. */
	REASON_SOCK_CONNECT,         /* event: a socket's connect (TCP, UDP) to a frontend
				      * went to a backend */
	REASON_SOCK_SENDMSG,         /* event: an unconnected UDP datagram to a frontend
				      * went to its socket's backend */
	REASON_SOCK_REPLY,           /* event: a UDP reply's source (recvmsg) or a socket's
				      * peer (getpeername) shown as the frontend */
	REASON_SOCK_REJECT,          /* a socket's connect or send to a frontend without
				      * endpoints, or to an unserved port of a service IP:
				      * refused (ECONNREFUSED where the kernel lets the
				      * program say so, else EPERM) */
	REASON_SOCK_DROP,            /* a socket's connect or send to a frontend the node
				      * may not use (no endpoint in the set for the node,
				      * outside its source ranges, a missing slot): EPERM */
	REASON_SOCK_REVNAT_FAILED,   /* event: the socket's reverse entry could not be
				      * written: its replies show the backend */
	REASON_L2_ANNOUNCE_REPLY,    /* ARP request for an address this node announces on
				      * the device (l2_announce4): answered, sent back out */
	REASON_MAX,
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* L2 announcement (lib/arp4.h): a load-balancer address this node answers
 * ARP requests for, on one device. Key and value of l2_announce4, written
 * by the control plane (control/l2announce.go). */
struct l2_announce4_key {
	__u32 ifindex; /* the device the request arrives on */
	__be32 addr;   /* the announced IPv4 address */
};

struct l2_announce4 {
	__u8 mac[6]; /* the device's MAC: the reply's sender hardware address */
	__u16 pad;
};

/* Prefilter of service traffic: a bitmap the control plane fills so that
 * a packet which can be neither service traffic nor a reply to it is
 * passed after one inlined array lookup. One bit per hash of
 *  - a service IP (destination test), and
 *  - a backend's address, port and protocol (source test: replies).
 * A clear bit is proof; a set bit only sends the packet on to the exact
 * lookups. The hashes are lb4_filter_dst/src in lib/filter.h; the Go side
 * (control/filter.go) must compute the same, which the datapath tests
 * check by real lookups. */
enum lb4_filter_size {
	LB4_FILTER_BITS_LOG2 = 22,                         /* 4 Mi bits, 512 KiB */
	LB4_FILTER_WORDS = 1 << (LB4_FILTER_BITS_LOG2 - 6), /* 64-bit words */
};

struct lb4_filter {
	__u64 words[LB4_FILTER_WORDS];
};

/* Single-entry array the agent writes at start. */
struct datapath_config {
	__be32 service_cidr4;      /* network address; 0/0 = no service CIDR known */
	__be32 service_cidr4_mask; /* netmask in network byte order */
	/* The rest is written by the control plane from the Node. */
	__be32 node_addr4;         /* SNAT source: the node's primary address; 0 = none */
	__be32 pod_cidr4;          /* this node's pods (rule 13's internal sources) */
	__be32 pod_cidr4_mask;     /* 0 = no pod CIDR known */
	__u16 snat_port_min;       /* SNAT ports, host order, inclusive */
	__u16 snat_port_max;
};

/* Defaults of the SNAT port range when the agent sets none: above the
 * kernel's default ephemeral range (32768-60999), so the node's own
 * connections never pick a port a SNATed flow holds. */
enum snat_default {
	SNAT_DEFAULT_PORT_MIN = 61000,
	SNAT_DEFAULT_PORT_MAX = 65535,
};

/* Key of lb4_source_ranges, an LPM trie: one entry per (load-balancer
 * frontend, allowed source CIDR). prefixlen counts the 32 bits of
 * rev_nat_id plus the CIDR's own. */
struct lb4_src_range_key {
	__u32 prefixlen;
	__u32 rev_nat_id;
	__be32 addr;
};

/* ICMP error rate of REJECT, a single-entry array the agent writes at
 * start (lib/ratelimit.h). 0 in a field keeps the datapath's default. */
struct reject_ratelimit {
	__u32 rate;  /* ICMP errors per second, per CPU */
	__u32 burst; /* errors a CPU may send at once after being idle */
};

/* Defaults when the agent sets none: the kernel's own ICMP limits
 * (net.ipv4.icmp_msgs_per_sec 1000, icmp_msgs_burst 50), here per CPU. */
enum reject_ratelimit_default {
	REJECT_DEFAULT_RATE = 1000,
	REJECT_DEFAULT_BURST = 50,
};

/* One CPU's token bucket, the value of the per-CPU sluice_reject_bucket.
 * Credit is kept in nanoseconds of refill: an error costs 1e9 / rate. */
struct reject_bucket {
	__u64 credit_ns; /* at most burst * cost */
	__u64 last_ns;   /* bpf_ktime_get_ns of the last refill */
};

/* Fragment tracking (lib/frag4.h): a datagram's fragments after the first
 * carry no L4 header, so the first one records its ports under the
 * fields every fragment of the datagram shares (RFC 791: source,
 * destination, protocol and identification), as it arrives, before any
 * rewrite. Key and value of lb4_fragments, which only the datapath
 * writes. */
struct frag4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct frag4_ports {
	__be16 sport;
	__be16 dport;
};

/* The layout of ct4_entry before expires and created (map ct4, an LRU hash
 * with per-CPU lists, up to commit 90bed31), kept so that the loader can
 * migrate a pinned map of that version (loader/migrate_ct4.go). Named
 * struct ct4_entry in that version's BTF. */
struct ct4_entry_v1 {
	__be32 backend_addr;
	__be16 backend_port;
	enum ct_kind kind;
	__u8 pad;
	__u32 rev_nat_id;
	__u32 backend_id;
};

/* The layout of ct4_entry before the SNAT fields (map ct4_v3, up to
 * commit e581ec9), for the migration to ct4_v3. */
struct ct4_entry_v2 {
	__be32 backend_addr;
	__be16 backend_port;
	enum ct_kind kind;
	enum ct_flags flags;
	__u32 rev_nat_id;
	__u32 backend_id;
	__u32 expires;
	__u32 created;
};

/* Only what the datapath's code uses gets into the object's BTF, and
 * bpf2go generates Go only from BTF. These types are for the Go side alone
 * (the v1 layout, for migration; the default lifetimes, which the loader
 * gives migrated flows): this variable puts them there. Its section is
 * none the loader knows (not .data, .bss or .rodata), so no map is made of
 * it and nothing of it is loaded. */
struct sluice_go_types {
	struct ct4_entry_v1 ct4_entry_v1;
	struct ct4_entry_v2 ct4_entry_v2;
	enum ct_timeout_default ct_timeout_default;
	enum ct_udp_stream ct_udp_stream;
	enum snat_default snat_default;
	enum lb_frontend_kind lb_frontend_kind;
	enum lb_scope lb_scope;
};
struct sluice_go_types sluice_go_types __attribute__((section(".sluice_go_types"), used));

#endif
