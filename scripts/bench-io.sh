#!/usr/bin/env bash
# Real-I/O benchmark (see BENCHMARKS.md): one dpdk-kube-proxy worker against
# dpdk-testpmd --forward-mode=io and =5tswap on the same PMD (memif; vhost on
# request) and the same pinned CPU, in one run, with dpdk-testpmd generators
# (txonly, txonly --txonly-multi-flow, pcap replay of N flows over IPv4 and
# over IPv6).
#
#   sudo scripts/bench-io.sh
#
# Needs root, dpdk-testpmd (DPDK 22.11), python3, 2 CPUs. No network, no
# hugepages. Writes bench-results/io.json and prints a summary.
# Env: BENCH_PMDS (memif | vhost | memif,vhost; default memif; BENCH_PMD is
#      accepted too), BENCH_GENS (txonly,txonly-multi,pcap,pcap6), BENCH_DUTS
#      (testpmd-io,testpmd-5tswap,proxy), BENCH_FLOWS (4096: pcap flows),
#      BENCH_FRAME (64: frame size without FCS, up to 1514),
#      BENCH_DURATION (10 s), BENCH_WARMUP (2 s), BENCH_RETRIES (1),
#      BENCH_ADMIN_PORT (19300), BENCH_NO_BUILD=1 to skip `cargo build
#      --release`, BENCH_QUIET_WAIT (20 s: how long to wait for other CPU load
#      to go away), BENCH_STRICT=1 (exit 2 when other load shared a benchmark
#      CPU during a measurement), BENCH_QUICK=1 (recorded in the results),
#      BENCH_OUT (bench-results/io.json).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

die() { echo "bench-io.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (DPDK EAL, memif/vhost-user sockets)"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (apt-get install dpdk)"
command -v python3 >/dev/null || die "python3 not found"
command -v stdbuf >/dev/null || die "stdbuf (coreutils) not found"
[ "$(nproc --all)" -ge 2 ] || die "needs at least 2 CPUs (generator on CPU 0, DUT on CPU 1)"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
PROXY=$TARGET_DIR/release/dpdk-kube-proxy
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "[bench-io] cargo build --release --bin dpdk-kube-proxy" >&2
  cargo build --release --offline --locked --bin dpdk-kube-proxy
fi
[ -x "$PROXY" ] || die "$PROXY not built"

TMP=$(mktemp -d /tmp/dkp-bench-io.XXXXXX)
PIDS=$TMP/pids
: >"$PIDS"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Only the processes this run started (their pids are in $PIDS).
  while read -r pid; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done <"$PIDS"
  sleep 0.5
  while read -r pid; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done <"$PIDS"
  if [ "$rc" != 0 ]; then
    mkdir -p bench-results/tmp
    cp "$TMP"/*.log "$TMP"/*.yaml bench-results/tmp/ 2>/dev/null || true
    echo "bench-io.sh: FAILED (rc=$rc); logs copied to bench-results/tmp/" >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

args=(--proxy "$PROXY" --tmp "$TMP" --pidfile "$PIDS" --out "${BENCH_OUT:-bench-results/io.json}"
      --warmup "${BENCH_WARMUP:-2}" --duration "${BENCH_DURATION:-10}"
      --pmds "${BENCH_PMDS:-${BENCH_PMD:-memif}}" --flows "${BENCH_FLOWS:-4096}" --frame "${BENCH_FRAME:-64}"
      --gens "${BENCH_GENS:-txonly,txonly-multi,pcap,pcap6}" --duts "${BENCH_DUTS:-testpmd-io,testpmd-5tswap,proxy}"
      --retries "${BENCH_RETRIES:-1}" --admin-port "${BENCH_ADMIN_PORT:-19300}"
      --quiet-wait "${BENCH_QUIET_WAIT:-20}")
[ "${BENCH_STRICT:-0}" = 1 ] && args+=(--strict)
[ "${BENCH_QUICK:-0}" = 1 ] && args+=(--quick)
python3 scripts/bench/io.py "${args[@]}"
