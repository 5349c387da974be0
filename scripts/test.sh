#!/usr/bin/env bash
# Installs what is needed and runs every test: unit (no DPDK), DPDK
# integration (EAL in-process on ring PMDs), end-to-end (the real binary on
# af_packet ports in network namespaces with kernel peers).
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
echo "== tests" >&2
# Each integration/e2e test file is its own process (one EAL per process).
cargo test --workspace --locked -- --test-threads=2
