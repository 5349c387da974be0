#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (packet_views, pipeline,
# control_translate) for N seconds each, one after the other.
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]
#
# N defaults to $DKP_FUZZ_SECONDS, else 60. Each target starts from the
# committed seed corpus fuzz/corpus/<target> (read only: never grown here)
# and grows a scratch working corpus in fuzz/work/<target>, emptied first.
# Crashes go to fuzz/artifacts/<target>/ and make the script fail; minimise
# one with `cargo +nightly fuzz tmin <target> <file>` and commit it under
# fuzz/regressions/<target>/ (replayed by `cargo test` in fuzz/harness).
#
# Needs the nightly toolchain and cargo-fuzz; installs them when missing
# (rustup and crates.io). When neither can be had (offline machine), it says
# so loudly and exits 0: fuzzing is skipped, not failed. The stable replay
# of the corpus (fuzz/harness, run by scripts/test.sh) still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(packet_views pipeline control_translate)
seconds=${DKP_FUZZ_SECONDS:-60}
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --seconds=*) seconds=${1#--seconds=}; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds must be a number" >&2; exit 2 ;; esac

skip() {
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!! fuzz.sh: FUZZING SKIPPED: $*" >&2
  echo "!! The corpus is still replayed on stable by fuzz/harness's tests." >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  exit 0
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (minimal profile)" >&2
  rustup toolchain install nightly --profile minimal >&2 \
    || skip "no nightly toolchain, and 'rustup toolchain install nightly' failed"
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "^cargo-fuzz $CARGO_FUZZ_VERSION\$"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2 \
    || skip "cargo-fuzz $CARGO_FUZZ_VERSION could not be installed"
fi

# Sanitizer builds share nothing with the workspace's: their own target dir.
export CARGO_TARGET_DIR=${DKP_FUZZ_TARGET_DIR:-$root/fuzz/target}
echo "== cargo +nightly fuzz build (release, debug assertions, ASan)" >&2
(cd fuzz && cargo +nightly fuzz build -O)

rc=0
summary=()
for t in "${targets[@]}"; do
  work=$root/fuzz/work/$t
  artifacts=$root/fuzz/artifacts/$t
  rm -rf "$work"
  mkdir -p "$work" "$artifacts"
  log=$root/fuzz/work/$t.log
  echo "== fuzz $t for ${seconds}s (seeds: fuzz/corpus/$t, working corpus: fuzz/work/$t)" >&2
  set +e
  # The first corpus directory receives new inputs; the committed one is
  # only read. One process, one core.
  (cd fuzz && cargo +nightly fuzz run -O "$t" "$work" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/") >"$log" 2>&1
  trc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log" | tail -1)
  crashes=$(find "$artifacts" -type f | wc -l)
  if [ "$trc" -ne 0 ]; then
    rc=1
    tail -40 "$log" >&2
    echo "== $t: FAILED (exit $trc), artifacts in $artifacts" >&2
  fi
  summary+=("$(printf '%-18s %12s executions  %5ss  %s crash file(s)  %s' "$t" "${execs:-?}" "$seconds" "$crashes" \
    "$([ "$trc" -eq 0 ] && echo ok || echo FAILED)")")
done
echo "== fuzz summary" >&2
printf '%s\n' "${summary[@]}"
exit "$rc"
