#!/usr/bin/env bash
# Instructions per packet of the pipeline's hot path, counted by valgrind's
# callgrind (exact, and unaffected by other load on the machine — unlike
# timings on a shared 2-CPU VM). Runs examples/hotpath.rs per scenario and
# counts only its `measure` function (set-up excluded).
#
#   scripts/bench/callgrind.sh [--no-build] [PACKETS] [SCENARIO[:PACKETS]...]
#
# A scenario may carry its own packet count (`fwd60k_updates:4200000`: 30
# publications of its 140,000 packets each).
# Prints "SCENARIO PACKETS INSTRUCTIONS_PER_PACKET" and, with BENCH_OUT=FILE,
# writes JSON {"env": {...}, "rows": [{"scenario", "packets", "instructions_per_packet"}]}.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
BUILD=1
if [ "${1:-}" = --no-build ]; then BUILD=0; shift; fi
DEFAULT_PACKETS=${1:-200000}
shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fwd1 fwd1+good rev1 fwd1_v6 rev1_v6 fwd60k fwd60k_burst fwd60k_burst_v6 fwd60k_10k fwd60k_10k_burst fwd60k_masq_burst new fwd60k_updates:4200000)
TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ "$BUILD" = 1 ]; then
  cargo build --release --offline --locked --example hotpath >&2
fi
BIN=$TARGET_DIR/release/examples/hotpath
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rows=()
for spec in "${SCENARIOS[@]}"; do
  s=${spec%%:*}
  PACKETS=$DEFAULT_PACKETS
  [ "$s" = "$spec" ] || PACKETS=${spec#*:}
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hotpath::measure*' \
    --callgrind-out-file="$TMP/cg.$s" "$BIN" "$s" "$PACKETS" >"$TMP/out.$s" 2>"$TMP/err.$s" || {
    echo "callgrind.sh: $s failed:" >&2; tail -20 "$TMP/err.$s" >&2; exit 1; }
  ir=$(grep -E '^(summary|totals):' "$TMP/cg.$s" | head -1 | awk '{print $2}')
  per=$(python3 -c "print(f'{$ir/$PACKETS:.1f}')")
  echo "$s $PACKETS $per"
  rows+=("{\"scenario\": \"$s\", \"packets\": $PACKETS, \"instructions_per_packet\": $per}")
done
if [ -n "${BENCH_OUT:-}" ]; then
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  vg=$(valgrind --version)
  { printf '{"env": {"git_rev": "%s", "valgrind": "%s", "date": "%s", "method": "callgrind Ir of hotpath::measure / packets"},\n "rows": [' "$rev" "$vg" "$(date -u +%FT%TZ)"
    (IFS=,; printf '%s' "${rows[*]}")
    printf ']}\n'; } >"$BENCH_OUT"
fi
