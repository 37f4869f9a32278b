/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* The on-wire header layouts sluice parses, as in the kernel's uapi headers
 * (linux/if_ether.h, ip.h, tcp.h, udp.h, icmp.h, in.h, pkt_cls.h), reduced
 * to what the datapath uses so the build needs no host kernel headers. */
#ifndef __SLUICE_NET_HDRS_H
#define __SLUICE_NET_HDRS_H

#include <linux/types.h>

#define ETH_ALEN 6
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806

struct ethhdr {
	unsigned char h_dest[ETH_ALEN];
	unsigned char h_source[ETH_ALEN];
	__be16 h_proto;
} __attribute__((packed));

struct iphdr {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__u8 ihl:4, version:4;
#else
	__u8 version:4, ihl:4;
#endif
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

/* An ARP packet for IPv4 over Ethernet (RFC 826), header and addresses
 * in one, as linux/if_arp.h's arphdr followed by its variable part. */
#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

struct arp4hdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	unsigned char ar_sha[ETH_ALEN];
	__be32 ar_sip;
	unsigned char ar_tha[ETH_ALEN];
	__be32 ar_tip;
} __attribute__((packed));

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u16 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

/* The flags byte of the TCP header (offset 13). */
#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_ACK 0x10

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
};

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7

#endif
