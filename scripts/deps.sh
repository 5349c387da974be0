#!/usr/bin/env bash
# Installs what building and testing dpdk-kube-proxy needs on Debian 12.
# Safe to run repeatedly: apt-get runs only when a package is missing.
set -euo pipefail

PKGS=(dpdk dpdk-dev libdpdk-dev libclang-dev clang libbpf-dev pkg-config build-essential
      iproute2 ethtool python3 procps python3-matplotlib nftables)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  home=${HOME:-/root}
  if [ -x "$home/.cargo/bin/cargo" ]; then
    export PATH="$home/.cargo/bin:$PATH"
  elif [ -x /root/.cargo/bin/cargo ]; then
    export PATH="/root/.cargo/bin:$PATH"
  else
    echo "deps: no Rust toolchain found; install rustup (https://rustup.rs) with Rust >= 1.80" >&2
    exit 1
  fi
fi
