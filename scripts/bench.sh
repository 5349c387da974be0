#!/usr/bin/env bash
# The benchmark suite in one command (see BENCHMARKS.md, "How to run"):
#
#   sudo scripts/bench.sh [--quick] [--no-build] [--only NAME,...]
#
# 1. build: cargo build --release (+ examples), cargo bench --no-run (skipped by --no-build)
# 2. criterion: cargo bench --bench pipeline on CPU 1     -> bench-results/criterion.json
#    callgrind: scripts/bench/callgrind.sh (instructions per packet, examples/hotpath.rs) -> bench-results/callgrind.json
# 3. replay:    cargo bench --bench replay (if the target exists) -> bench-results/replay.json
#    memory:    cargo bench --bench memory on CPU 1 (the session table's memory floor) -> bench-results/memory.json
# 4. io:        scripts/bench-io.sh (testpmd io/5tswap vs the proxy over memif) -> bench-results/io.json
# 5. scale:     scripts/bench-scale.sh (kube-apiserver at 10,000 Services)    -> bench-results/scale.json
# 6. kernel:    scripts/bench-kernel.sh (if present: kernel baseline)          -> bench-results/kernel.json
# then scripts/bench/report.py regenerates BENCHMARKS.md's generated sections
# and bench-results/*.png.
#
# --quick: short windows (criterion 0.5 s warm-up / 1 s measurement, real
# I/O 1 s + 3 s per run, no waiting for an idle machine, no retries) and no
# scale/kernel unless named in --only; about 2 minutes once built.
# --only NAME,...: run only these of criterion, callgrind, replay, memory, io, scale, kernel
# (the report always runs). A failing piece does not stop the others; the
# exit status is 1 if any failed.
# Env: passed through to the pieces (BENCH_PMDS=memif,vhost, BENCH_FLOWS,
# BENCH_DURATION, ... see scripts/bench-io.sh), BENCH_SCALE_ARGS ("10000 10
# 100"), CARGO_TARGET_DIR.
# The pieces below are functions called through step(), which shellcheck does not see.
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() { sed -n '2,/^# The pieces below/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "bench.sh: $*" >&2; exit 2; }

QUICK=0 BUILD=1 ONLY=
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --only) shift; [ $# -gt 0 ] || die "--only needs a list"; ONLY=$1 ;;
    --only=*) ONLY=${1#--only=} ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
PIECES=(criterion callgrind replay memory io scale kernel)
if [ -n "$ONLY" ]; then
  IFS=, read -r -a SELECTED <<<"$ONLY"
  for n in "${SELECTED[@]}"; do
    [[ " ${PIECES[*]} " == *" $n "* ]] || die "unknown piece '$n' (choose from ${PIECES[*]})"
  done
elif [ "$QUICK" = 1 ]; then
  SELECTED=(criterion replay memory io)
else
  SELECTED=("${PIECES[@]}")
fi
selected() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || [ "${SELECTED[*]}" = criterion ] \
  || die "run as root (DPDK EAL, memif sockets, the scale bench's API server); only --only criterion runs without"
# Installs what is missing (dpdk, python3-matplotlib, ...), puts cargo on PATH.
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
RESULTS=$ROOT/bench-results
mkdir -p "$RESULTS"
export CARGO_TERM_COLOR=never

STEP=
SUMMARY=()
FAILED=0
T_SUITE=$SECONDS
on_exit() {
  local rc=$?
  trap - EXIT
  if [ "$rc" != 0 ] && [ -n "$STEP" ]; then
    echo "bench.sh: stopped during '$STEP' (rc=$rc); the pieces clean up after themselves" >&2
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step NAME CMD...: runs a piece, records its status and time, never aborts the suite.
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  STEP=$name
  echo "== $name: $*" >&2
  # A subshell not tested by || or if, so that set -e stops the piece at its first failing command.
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  STEP=
  if [ "$rc" = 0 ]; then
    SUMMARY+=("$(printf '%-10s ok       %4ds' "$name" $((SECONDS - t0)))")
  else
    SUMMARY+=("$(printf '%-10s FAILED   %4ds (rc=%s)' "$name" $((SECONDS - t0)) "$rc")")
    FAILED=1
  fi
}
skip() { SUMMARY+=("$(printf '%-10s skipped  (%s)' "$1" "$2")"); echo "== $1: skipped: $2" >&2; }

has_bench() { # has_bench NAME: does the workspace have a bench target NAME?
  cargo metadata --no-deps --offline --format-version 1 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
sys.exit(0 if any(t["name"] == sys.argv[1] and "bench" in t["kind"]
                  for p in m["packages"] for t in p["targets"]) else 1)' "$1"
}

build() {
  cargo build --release --offline --locked
  cargo build --release --offline --locked --example hotpath
  cargo bench --no-run --offline --locked
}

criterion() {
  local since args=()
  since=$(($(date +%s) - 1))
  [ "$QUICK" = 1 ] && args=(--warm-up-time 0.5 --measurement-time 1 --sample-size 20 --nresamples 20000)
  local cmd=(taskset -c 1 cargo bench --offline --locked --bench pipeline -- "${args[@]}")
  "${cmd[@]}"
  local collect=(--criterion-dir "$TARGET_DIR/criterion" --since "$since" --out "$RESULTS/criterion.json"
                 --command "${cmd[*]}" --pinning "taskset -c 1 (cargo and the bench binary on CPU 1)")
  [ "$QUICK" = 1 ] && collect+=(--quick)
  python3 scripts/bench/criterion.py "${collect[@]}"
}

callgrind() {
  # Instructions per packet: exact, unaffected by other load (valgrind).
  local packets=200000
  [ "$QUICK" = 1 ] && packets=50000
  BENCH_OUT="$RESULTS/callgrind.json" scripts/bench/callgrind.sh --no-build "$packets"
}

replay() {
  local args=()
  [ "$QUICK" = 1 ] && args=(--quick)
  cargo bench --offline --locked --bench replay -- "${args[@]}" --out "$RESULTS/replay.json"
}

memory() {
  local args=()
  [ "$QUICK" = 1 ] && args=(--quick)
  cargo bench --offline --locked --bench memory -- "${args[@]}" --cpu 1 --out "$RESULTS/memory.json"
}

io() {
  if [ "$QUICK" = 1 ]; then
    BENCH_QUICK=1 BENCH_WARMUP=${BENCH_WARMUP:-1} BENCH_DURATION=${BENCH_DURATION:-3} \
      BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-0} BENCH_RETRIES=${BENCH_RETRIES:-0} \
      BENCH_NO_BUILD=1 BENCH_OUT="$RESULTS/io.json" scripts/bench-io.sh
  else
    BENCH_NO_BUILD=1 BENCH_OUT="$RESULTS/io.json" scripts/bench-io.sh
  fi
}

scale() {
  # shellcheck disable=SC2086 # word splitting of the argument list is intended
  BENCH_NO_BUILD=1 scripts/bench-scale.sh ${BENCH_SCALE_ARGS:-10000 10 100}
}

kernel() { bash scripts/bench-kernel.sh; }

if [ "$BUILD" = 1 ]; then step build build; else skip build "--no-build"; fi
if selected criterion; then step criterion criterion; fi
if selected callgrind; then step callgrind callgrind; fi
if selected replay; then
  if has_bench replay; then step replay replay; else skip replay "no 'replay' bench target in this tree"; fi
fi
if selected memory; then
  if has_bench memory; then step memory memory; else skip memory "no 'memory' bench target in this tree"; fi
fi
if selected io; then step io io; fi
if selected scale; then step scale scale; fi
if selected kernel; then
  if [ -f scripts/bench-kernel.sh ]; then step kernel kernel; else skip kernel "no scripts/bench-kernel.sh in this tree"; fi
fi
step report python3 scripts/bench/report.py

echo >&2
echo "bench.sh: $( [ "$QUICK" = 1 ] && echo "quick " )suite done in $((SECONDS - T_SUITE)) s; results in bench-results/, tables in BENCHMARKS.md" >&2
printf '  %s\n' "${SUMMARY[@]}" >&2
exit "$FAILED"
