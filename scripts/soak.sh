#!/usr/bin/env bash
# Soak test (see scripts/soak.py): the real proxy on af_packet ports in
# network namespaces, mixed TCP/UDP traffic with the service table changed
# every second, 10 minutes by default; fails if mbufs, sessions or memory do
# not return to their baseline or an established flow broke.
#
#   scripts/soak.sh [--duration SECONDS] [--churn SECONDS] [--bin PATH]
#
# Without --bin it builds and uses the release binary. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "soak.sh: run as root (network namespaces, af_packet, DPDK EAL)" >&2
  exit 1
fi
bin=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$bin" ]; then
  source scripts/deps.sh
  cargo build --release --locked --bin dpdk-kube-proxy >&2
  bin="${CARGO_TARGET_DIR:-target}/release/dpdk-kube-proxy"
fi
exec timeout --signal=TERM --kill-after=30 "$(( ${DKP_SOAK_LIMIT:-1800} ))" \
  python3 scripts/soak.py --bin "$bin" "${args[@]}"
