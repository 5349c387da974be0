#!/usr/bin/env bash
# Installs what is needed and runs every test: unit (no DPDK), DPDK
# integration (EAL in-process on ring PMDs), end-to-end (the real binary on
# af_packet ports in network namespaces with kernel peers), cluster (a real
# kube-apiserver + etcd driving the real binary).
# Needs root (network namespaces, af_packet, EAL).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (network namespaces, af_packet, DPDK EAL)" >&2
  exit 1
fi

export CARGO_TERM_COLOR=never
echo "== build" >&2
cargo build --workspace --all-targets --locked
echo "== clippy (warnings are errors)" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licences and banned crates (deny.toml); offline: no advisory database here.
if ! command -v cargo-deny >/dev/null; then
  echo "== installing cargo-deny (once per machine)" >&2
  cargo install cargo-deny --locked --version 0.20.2
fi
echo "== cargo deny check licenses bans" >&2
cargo deny --offline check licenses bans
# kube-apiserver + etcd for the cluster tests (built from the Go module proxy
# once, then cached in /var/cache/dpdk-kube-proxy/k8s).
echo "== kube-apiserver and etcd" >&2
scripts/k8s-test-env.sh build >/dev/null
echo "== benchmark report generator and real-I/O rules (self-tests)" >&2
python3 scripts/bench/report.py --check
python3 scripts/bench/io.py --check
echo "== fuzz corpus replay (stable) and fuzzing (nightly, ${DKP_FUZZ_SECONDS:-60}s per target)" >&2
# The fuzz crate is its own workspace (excluded from the main one).
cargo test --manifest-path fuzz/Cargo.toml -p dkp-fuzz-harness --locked
# Sanitizer builds next to the workspace's cached target dir when there is
# one (CI), so a second run on the same machine does not rebuild them.
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -z "${DKP_FUZZ_TARGET_DIR:-}" ]; then
  export DKP_FUZZ_TARGET_DIR="${CARGO_TARGET_DIR%/}-fuzz"
fi
scripts/fuzz.sh --seconds "${DKP_FUZZ_SECONDS:-60}"
echo "== tests" >&2
# Each integration/e2e test file is its own process (one EAL per process).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
