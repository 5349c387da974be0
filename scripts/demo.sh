#!/usr/bin/env bash
# The demo: real TCP (HTTP), UDP and SCTP connections to a Service VIP, load-balanced
# by the DPDK dataplane (af_packet ports, 2 workers) across three backend
# "pods" in network namespaces. Installs what it needs, builds, runs, prints
# how the connections spread and the key metrics, then removes everything.
# Run as root on Debian 12:  sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }

P=dkpdemo
ADMIN=127.0.0.1:10249
CONF=$(mktemp /tmp/dkpdemo-XXXX.yaml)
LOG=$(mktemp /tmp/dkpdemo-XXXX.log)
PEER="python3 tests/e2e/peer.py"

cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill -TERM "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
  scripts/netns.sh down "$P" || true
  rm -f "$CONF" "$LOG"
}
trap cleanup EXIT INT TERM

echo "== building"
cargo build --quiet --bin dpdk-kube-proxy
BIN=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/dpdk-kube-proxy

echo "== topology: client, proxy (2 af_packet ports), 3 backends in network namespaces"
scripts/netns.sh up "$P"
for i in 1 2 3; do
  ip netns exec "$P-be$i" $PEER serve --name "pod-$i" >/dev/null 2>&1 &
  disown
done
sed "s/iface=P0/iface=${P}0/; s/iface=P1/iface=${P}1/; s/127.0.0.1:PORT/$ADMIN/" scripts/demo.yaml > "$CONF"

echo "== starting dpdk-kube-proxy (config: scripts/demo.yaml)"
ip netns exec "$P-proxy" "$BIN" --config "$CONF" >"$LOG" 2>&1 &
PROXY_PID=$!
admin() { ip netns exec "$P-proxy" $PEER http-get "http://$ADMIN$1"; }
for _ in $(seq 100); do
  [ "$(admin /proxyMode 2>/dev/null)" = dpdk ] && break
  kill -0 "$PROXY_PID" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.2
done
echo "   /proxyMode -> $(admin /proxyMode)"

echo "== 300 HTTP requests and 300 UDP requests from the client to 198.18.100.1"
ip netns exec "$P-client" $PEER clients --vip 198.18.100.1 --count 300 --concurrency 12 --human
echo "== the same over IPv6 to [2001:2:0:100::1] (100 each)"
ip netns exec "$P-client" $PEER clients --vip 2001:2:0:100::1 --count 100 --concurrency 12 --human
echo "== 60 SCTP associations (raw-socket peers) to 198.18.100.1:3868 (backends on 9999)"
ip netns exec "$P-client" $PEER sctp-clients --vip 198.18.100.1 --port 3868 --count 60 --human
echo "== a Service with no endpoints (198.18.100.2) is rejected like kube-proxy does"
ip netns exec "$P-client" $PEER reject --vip 198.18.100.2 --human
echo "== what the proxy programmed (dpdk-kube-proxy inspect), first Services"
ip netns exec "$P-proxy" "$BIN" inspect --admin "$ADMIN" | head -12 | sed 's/^/   /'
echo "== which backend would 198.18.0.2:40000 -> 198.18.100.1:80/tcp get?"
ip netns exec "$P-proxy" "$BIN" inspect --admin "$ADMIN" lookup 198.18.0.2:40000 198.18.100.1:80 | sed 's/^/   /'
echo "== key metrics (http://$ADMIN/metrics inside the proxy namespace)"
admin /metrics | grep -E '^(dpdk_kube_proxy_(rx_packets|tx_packets|sessions_created|handoff_out_packets|rejected_connections|nat_forward_packets|nat_reverse_packets)_total|dpdk_kube_proxy_dropped_packets_total.* [1-9])' | sed 's/^/   /'
echo "== done; cleaning up"
