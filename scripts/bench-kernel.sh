#!/usr/bin/env bash
# Kernel baseline (see BENCHMARKS.md): CPU time per packet of the work
# kube-proxy's nftables mode does in the kernel (DNAT + conntrack, its ruleset
# shape) versus dpdk-kube-proxy on af_packet ports, over the same veths in
# network namespaces, at fixed offered loads, plus two references (no router;
# plain kernel forwarding).
#
#   sudo scripts/bench-kernel.sh            # 20k, 50k, 100k packets/s, 5 cases, 3 repeats: ~8 min
#   sudo scripts/bench-kernel.sh --quick    # 50k packets/s, 4 cases, 1 run, short windows: < 1 min
#
# Needs root, nft (apt-get install nftables, or scripts/deps.sh), python3,
# ethtool, taskset, 2 CPUs. Installs nothing. Writes bench-results/kernel.json
# and prints a table. Everything runs in namespaces named bkern<PID>-* that
# the run creates and removes (also on failure); only 198.18.0.0/15; the
# proxy's admin address is 127.0.0.1 inside its namespace; no nftables table
# is ever created in the root namespace.
# Env: BENCH_RATES (comma separated pps), BENCH_DURATION (6 s), BENCH_WARMUP (1.5 s),
#      BENCH_REPEAT (3; rows are medians), BENCH_CASES (direct,kernel-forward,nftables,
#      dpdk-kube-proxy,dpdk-ingress-drop), BENCH_FLOWS (1024), BENCH_ENDPOINTS (4),
#      BENCH_OUT (bench-results/kernel.json), BENCH_QUIET_WAIT (20 s, --quick 2 s: how
#      long to wait, once, for other CPU load to go away), BENCH_RETRIES (0: measure
#      again when other load took CPU from the packet path), BENCH_NICE (-10: nice
#      value of the generator and the proxy), BENCH_NO_BUILD=1 (skip cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { echo "bench-kernel.sh: $*" >&2; exit 1; }
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $arg (use --quick)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (network namespaces, nftables, DPDK EAL)"
command -v nft >/dev/null || die "nft not found: install nftables (apt-get install nftables, or scripts/deps.sh)"
for t in ip python3 ethtool taskset; do
  command -v "$t" >/dev/null || die "$t not found (scripts/deps.sh installs what the project needs)"
done
[ "$(nproc --all)" -ge 2 ] || die "needs at least 2 CPUs (generator and kernel path on CPU 0, proxy worker on CPU 1)"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
PROXY=$TARGET_DIR/release/dpdk-kube-proxy
if [ "${BENCH_NO_BUILD:-0}" != 1 ] && command -v cargo >/dev/null; then
  echo "[bench-kernel] cargo build --release --bin dpdk-kube-proxy" >&2
  cargo build --release --offline --locked --bin dpdk-kube-proxy
fi
[ -x "$PROXY" ] || die "$PROXY not built (cargo build --release --offline)"

if [ "$QUICK" = 1 ]; then
  RATES=${BENCH_RATES:-50000} DURATION=${BENCH_DURATION:-4} WARMUP=${BENCH_WARMUP:-1}
  REPEAT=${BENCH_REPEAT:-1} QUIET_WAIT=${BENCH_QUIET_WAIT:-2} RETRIES=${BENCH_RETRIES:-0}
else
  RATES=${BENCH_RATES:-20000,50000,100000} DURATION=${BENCH_DURATION:-6} WARMUP=${BENCH_WARMUP:-1.5}
  REPEAT=${BENCH_REPEAT:-3} QUIET_WAIT=${BENCH_QUIET_WAIT:-20} RETRIES=${BENCH_RETRIES:-0}
fi

PREFIX=bkern$$
TMP=$(mktemp -d /tmp/dkp-bench-kernel.XXXXXX)
PIDS=$TMP/pids
NSFILE=$TMP/netns
: >"$PIDS"
: >"$NSFILE"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Only the processes this run started (their pids are in $PIDS) ...
  while read -r pid; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done <"$PIDS"
  sleep 0.5
  while read -r pid; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done <"$PIDS"
  # ... and only the namespaces it created (their veths go with them).
  for ns in $(sort -u "$NSFILE"); do
    if ip netns list | grep -qw "^$ns"; then
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  if [ "$rc" != 0 ]; then
    mkdir -p bench-results/tmp
    cp "$TMP"/*.log "$TMP"/*.yaml bench-results/tmp/ 2>/dev/null || true
    echo "bench-kernel.sh: FAILED (rc=$rc); logs copied to bench-results/tmp/" >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p bench-results
python3 scripts/bench/kernel.py run \
  --proxy "$PROXY" --tmp "$TMP" --pidfile "$PIDS" --nsfile "$NSFILE" --prefix "$PREFIX" \
  --out "${BENCH_OUT:-bench-results/kernel.json}" \
  --rates "$RATES" --duration "$DURATION" --warmup "$WARMUP" \
  ${BENCH_CASES:+--cases "$BENCH_CASES"} --repeat "$REPEAT" \
  --flows "${BENCH_FLOWS:-1024}" --endpoints "${BENCH_ENDPOINTS:-4}" \
  --quiet-wait "$QUIET_WAIT" --retries "$RETRIES" --nice "${BENCH_NICE:--10}" \
  $( [ "$QUICK" = 1 ] && echo --quick )
