#!/usr/bin/env bash
# Test/demo topology: network namespaces joined by veth pairs.
#
#   P-client (198.18.0.2/24, 2001:2::2/64) ==veth== [P0] P-proxy [P1] --bridge-- P-be1 198.18.1.11/24
#                                                              |-- P-be2 198.18.1.12/24
#                                                              `-- P-be3 198.18.1.13/24
# (backend i also has 2001:2:0:1::1i/64; the proxy's node addresses are
# 198.18.0.1 + 2001:2::1 on port 0 and 198.18.1.1 + 2001:2:0:1::1 on port 1)
# The proxy namespace holds the two veth ends the DPDK af_packet ports use
# (interfaces P0 and P1, no IP addresses: the kernel stays out of the way)
# and a Linux bridge joining P1 to the backends. Clients reach the VIPs
# (198.18.100.0/24) and backends reach clients through the proxy's node
# addresses 198.18.0.1 and 198.18.1.1, which only DPDK answers (ARP).
#
# usage: netns.sh up P | down P
set -euo pipefail
cmd=${1:?usage: netns.sh up|down PREFIX}
P=${2:?prefix}
NBE=${NBE:-3}

off() { # ns dev: checksums computed by the sender, no segmentation offloads
  ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
}

down() {
  for ns in "$P-client" "$P-proxy" $(seq -f "$P-be%g" 1 "$NBE"); do
    if ip netns list | grep -qw "^$ns"; then
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

up() {
  down
  ip netns add "$P-proxy"
  ip netns add "$P-client"
  ip netns exec "$P-proxy" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$P-proxy" link set lo up
  ip -n "$P-client" link set lo up
  # client <-> proxy port 0
  ip link add "${P}c" netns "$P-client" type veth peer name "${P}0" netns "$P-proxy"
  ip -n "$P-client" addr add 198.18.0.2/24 dev "${P}c"
  ip -n "$P-client" link set "${P}c" up
  ip -n "$P-client" route add 198.18.100.0/24 via 198.18.0.1
  ip -n "$P-client" route add 198.18.1.0/24 via 198.18.0.1
  # The Service CIDR of the test kube-apiserver (scripts/k8s-test-env.sh).
  ip -n "$P-client" route add 198.18.128.0/17 via 198.18.0.1
  ip -n "$P-client" addr add 2001:2::2/64 dev "${P}c" nodad
  ip -n "$P-client" route add 2001:2:0:100::/64 via 2001:2::1
  ip -n "$P-client" route add 2001:2:0:1::/64 via 2001:2::1
  off "$P-client" "${P}c"
  # P0_MTU: a smaller MTU on the proxy's end of the client link only (the
  # client still sends MSS for 1500): a path MTU the proxy must report.
  [ -n "${P0_MTU:-}" ] && ip -n "$P-proxy" link set "${P}0" mtu "$P0_MTU"
  ip -n "$P-proxy" link set "${P}0" up
  off "$P-proxy" "${P}0"
  # proxy port 1 <-> bridge <-> backends
  ip -n "$P-proxy" link add "${P}br" type bridge
  ip -n "$P-proxy" link set "${P}br" up
  ip link add "${P}1" netns "$P-proxy" type veth peer name "${P}1b" netns "$P-proxy"
  ip -n "$P-proxy" link set "${P}1b" master "${P}br" up
  ip -n "$P-proxy" link set "${P}1" up
  off "$P-proxy" "${P}1"
  off "$P-proxy" "${P}1b"
  for i in $(seq 1 "$NBE"); do
    ns="$P-be$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # The servers close first and would hold TIME_WAIT for (client:port ->
    # backend:port). Tests reach the same backends through several VIPs, so a
    # client port reused for another VIP can land on such a TIME_WAIT (a NAT
    # port collision, as with kube-proxy) and be refused by PAWS. Keep no
    # TIME_WAIT sockets in the test backends.
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_max_tw_buckets=0
    ip link add "${P}e$i" netns "$ns" type veth peer name "${P}b$i" netns "$P-proxy"
    ip -n "$P-proxy" link set "${P}b$i" master "${P}br" up
    off "$P-proxy" "${P}b$i"
    ip -n "$ns" addr add "198.18.1.1$i/24" dev "${P}e$i"
    ip -n "$ns" link set "${P}e$i" up
    ip -n "$ns" route add 198.18.0.0/24 via 198.18.1.1
    ip -n "$ns" addr add "2001:2:0:1::1$i/64" dev "${P}e$i" nodad
    ip -n "$ns" route add 2001:2::/64 via 2001:2:0:1::1
    # Pods reach Services through the node (hairpin included).
    ip -n "$ns" route add 198.18.100.0/24 via 198.18.1.1
    ip -n "$ns" route add 198.18.128.0/17 via 198.18.1.1
    ip -n "$ns" route add 2001:2:0:100::/64 via 2001:2:0:1::1
    off "$ns" "${P}e$i"
  done
}

"$cmd"
