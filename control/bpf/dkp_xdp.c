// SPDX-License-Identifier: (Apache-2.0 OR MIT)
//
// The XDP program of a `role: shared` port (dpdk-kube-proxy beside the host
// kernel on an af_xdp port). The kernel keeps the NIC and everything on it;
// this program hands the dataplane (through the port's AF_XDP sockets,
// `xsks_map`) only the traffic that is the proxy's:
//
//  * packets to a Service frontend: an exact (family, protocol, port,
//    address) entry of `dkp_frontends` (NodePorts on node addresses,
//    ClusterIP/ExternalIP/load-balancer ports);
//  * every packet to a frontend address the kernel does not hold (an entry
//    with port 0 and protocol 0 and FE_WHOLE): other ports and protocols
//    (the dataplane rejects them as kube-proxy does), fragments, ICMP, and
//    the ARP requests and neighbour solicitations for it;
//  * the answers to the dataplane's masqueraded connections: TCP/UDP/SCTP
//    to a node address (an entry with protocol 255, FE_SNAT) on a port of
//    the dataplane's SNAT range, unless the kernel has a socket for it: a
//    TCP connection (its own connections from the same ports keep
//    working), a TCP listener for a bare SYN, a UDP socket bound to the
//    port.
//
// Everything else (and everything when no AF_XDP socket is bound to the
// queue, e.g. after the proxy died) passes to the kernel. The control
// thread keeps `dkp_frontends` in step with the published table.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FE_EXACT 1
#define FE_WHOLE 2
#define FE_SNAT 4
#define PROTO_SNAT 255
// The dataplane's SNAT ports (dataplane::pipeline::SNAT_PORTS).
#define SNAT_FIRST 32768

struct fe_key {
	__u8 family; // 4 or 6
	__u8 proto;  // IP protocol; 0: the whole address; 255: SNAT address
	__be16 port; // destination port (network order); 0 for whole/SNAT
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct fe_key);
	__type(value, __u32);
} dkp_frontends SEC(".maps");

// Packets redirected to the dataplane (0) and passed to the kernel (1).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} dkp_stats SEC(".maps");

#define ARP_HLEN 28
#define NDP_NS 135

static __always_inline int pass(void)
{
	__u32 k = 1;
	__u64 *c = bpf_map_lookup_elem(&dkp_stats, &k);
	if (c)
		*c += 1;
	return XDP_PASS;
}

static __always_inline int to_dataplane(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *c = bpf_map_lookup_elem(&dkp_stats, &k);
	if (c)
		*c += 1;
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

static __always_inline __u32 flags_of(struct fe_key *k)
{
	__u32 *v = bpf_map_lookup_elem(&dkp_frontends, k);
	return v ? *v : 0;
}

// A frontend address the kernel does not hold.
static __always_inline int whole(__u8 family, const void *addr, int len)
{
	struct fe_key k = {};
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	if (len == 4)
		__builtin_memset(&k.addr[4], 0, 12);
	return flags_of(&k) & FE_WHOLE;
}

SEC("xdp")
int dkp_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return pass();
	__u16 type = eth->h_proto;
	void *l3 = eth + 1;
	// Tagged frames are the kernel's VLAN interfaces' (a shared port takes
	// no tag: af_xdp goes on the VLAN interface itself).
	if (type == bpf_htons(ETH_P_8021Q) || type == bpf_htons(ETH_P_8021AD))
		return pass();

	struct fe_key k = {};
	__u8 proto;
	void *l4;
	int first_fragment = 1;
	struct bpf_sock_tuple t = {};
	int v4;

	if (type == bpf_htons(ETH_P_ARP)) {
		// ARP request (Ethernet/IPv4) for a frontend address: the dataplane
		// answers it (the kernel does not hold the address).
		__u8 *a = l3;
		if ((void *)(a + ARP_HLEN) > end)
			return pass();
		if (a[6] != 0 || a[7] != 1) // operation: request
			return pass();
		k.family = 4;
		__builtin_memcpy(k.addr, a + 24, 4);
		return (flags_of(&k) & FE_WHOLE) ? to_dataplane(ctx) : pass();
	} else if (type == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return pass();
		k.family = 4;
		__builtin_memcpy(k.addr, &ip->daddr, 4);
		proto = ip->protocol;
		if (ip->frag_off & bpf_htons(0x1fff))
			first_fragment = 0;
		l4 = (void *)ip + ip->ihl * 4;
		t.ipv4.saddr = ip->saddr;
		t.ipv4.daddr = ip->daddr;
		v4 = 1;
	} else if (type == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return pass();
		proto = ip6->nexthdr;
		l4 = ip6 + 1;
		if (proto == IPPROTO_ICMPV6) {
			// A neighbour solicitation for a frontend address.
			__u8 *icmp = l4;
			if ((void *)(icmp + 24) <= end && icmp[0] == NDP_NS &&
			    whole(6, icmp + 8, 16))
				return to_dataplane(ctx);
		}
		k.family = 6;
		__builtin_memcpy(k.addr, &ip6->daddr, 16);
		__builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
		v4 = 0;
	} else {
		return pass();
	}

	// The whole address: a VIP the kernel does not hold.
	if (flags_of(&k) & FE_WHOLE)
		return to_dataplane(ctx);
	if (!first_fragment)
		return pass();
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return pass();
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return pass();
	k.proto = proto;
	k.port = ports[1];
	if (flags_of(&k) & FE_EXACT)
		return to_dataplane(ctx);

	// An answer to a masqueraded connection?
	if (bpf_ntohs(ports[1]) < SNAT_FIRST)
		return pass();
	k.proto = PROTO_SNAT;
	k.port = 0;
	if (!(flags_of(&k) & FE_SNAT))
		return pass();
	// SCTP: no socket lookup helper; the masquerade range is the
	// dataplane's (the kernel's SCTP must not use those ports).
	if (proto == IPPROTO_SCTP)
		return to_dataplane(ctx);
	struct bpf_sock *sk;
	__u32 len;
	if (v4) {
		t.ipv4.sport = ports[0];
		t.ipv4.dport = ports[1];
		len = sizeof(t.ipv4);
	} else {
		t.ipv6.sport = ports[0];
		t.ipv6.dport = ports[1];
		len = sizeof(t.ipv6);
	}
	if (proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(ctx, &t, len, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(ctx, &t, len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return to_dataplane(ctx);
	// A kernel socket: its connection (or a UDP socket bound to the port).
	// A TCP listener only claims new connections (a SYN without ACK): a
	// SYN-ACK or segment to its port belongs to no connection of the
	// kernel's, so it is the dataplane's answer.
	int listener = proto == IPPROTO_TCP && sk->state == BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	if (listener) {
		__u8 *tcp = l4;
		if ((void *)(tcp + 14) > end)
			return pass();
		__u8 flags = tcp[13];
		if ((flags & 0x12) != 0x02) // not a bare SYN
			return to_dataplane(ctx);
	}
	return pass();
}

char _license[] SEC("license") = "Dual MIT/GPL";
