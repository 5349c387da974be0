#!/usr/bin/env bash
# Control-plane scale benchmark (see BENCHMARKS.md): a real kube-apiserver +
# etcd (scripts/k8s-test-env.sh) loaded with SERVICES Services of ENDPOINTS
# endpoints each; the proxy (release build, one worker on a net_null port
# that receives nothing) watches it. Reports:
#   - initial sync: proxy start → every worker on a table with all Services
#   - one EndpointSlice change → every worker on the new table (p50/p99)
#   - proxy memory (VmRSS) with an empty cluster and with the load
#
#   sudo scripts/bench-scale.sh [SERVICES=10000] [ENDPOINTS=10] [CHANGES=100]
#
# Needs root, go (builds kube-apiserver/etcd once), python3. Everything
# listens on 127.0.0.1. Writes bench-results/scale.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SERVICES=${1:-10000}
ENDPOINTS=${2:-10}
CHANGES=${3:-100}
die() { echo "bench-scale.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (DPDK EAL)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
PROXY=${BENCH_PROXY:-$TARGET_DIR/release/dpdk-kube-proxy}
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --release --locked --bin dpdk-kube-proxy
fi
scripts/k8s-test-env.sh build >/dev/null

TMP=$(mktemp -d /tmp/dkp-scale.XXXXXX)
K8S=$TMP/k8s
PROXY_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$PROXY_PID" ] && kill -TERM "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
  scripts/k8s-test-env.sh down "$K8S" >/dev/null 2>&1 || true
  [ "$rc" != 0 ] && cp "$TMP"/proxy*.log bench-results/ 2>/dev/null || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p bench-results

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
METRICS=127.0.0.1:$(free_port)
HEALTHZ=127.0.0.1:$(free_port)
cat >"$TMP/config.yaml" <<EOF
eal:
  lcores: "0@(0-1),1@1"
  no_huge: true
  memory_mb: 256
  vdevs: ["net_null0,no-rx=1"]
  args: ["--log-level", "*:warning"]
ports:
  - device: net_null0
    addresses: ["198.18.0.1/24"]
workers:
  sessions: 65536
  idle_sleep_us: 100
admin:
  bind: $METRICS
EOF

scripts/k8s-test-env.sh up "$K8S" >/dev/null
# shellcheck disable=SC1091
source "$K8S/env"

start_proxy() { # $1: log name
  "$PROXY" --config "$TMP/config.yaml" --kubeconfig "$K8S/kubeconfig" --hostname-override node-a \
    --healthz-bind-address "$HEALTHZ" --health-check-bind-address 127.0.0.1 >"$TMP/$1.log" 2>&1 &
  PROXY_PID=$!
}
stop_proxy() {
  kill -TERM "$PROXY_PID"; wait "$PROXY_PID" || true; PROXY_PID=
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PROXY_PID/status"; }

echo "[scale] baseline: proxy on an empty cluster" >&2
start_proxy proxy-empty
python3 scripts/bench/scale.py wait --metrics "http://$METRICS/metrics" --entries 0 --timeout 60 >/dev/null
sleep 1
RSS_EMPTY=$(rss_kb)
stop_proxy

echo "[scale] loading $SERVICES Services x $ENDPOINTS endpoints through the API server" >&2
LOAD=$(python3 scripts/bench/scale.py load --env "$K8S/env" --services "$SERVICES" --endpoints "$ENDPOINTS")
echo "[scale] $LOAD" >&2

echo "[scale] initial sync" >&2
start_proxy proxy
SYNC=$(python3 scripts/bench/scale.py wait --metrics "http://$METRICS/metrics" --entries "$SERVICES")
echo "[scale] $SYNC" >&2
sleep 2
RSS_LOADED=$(rss_kb)

echo "[scale] $CHANGES EndpointSlice changes" >&2
CHURN=$(python3 scripts/bench/scale.py churn --env "$K8S/env" --metrics "http://$METRICS/metrics" \
  --services "$SERVICES" --endpoints "$ENDPOINTS" --changes "$CHANGES")
echo "[scale] $CHURN" >&2
RSS_AFTER=$(rss_kb)

python3 - "$LOAD" "$SYNC" "$CHURN" "$RSS_EMPTY" "$RSS_LOADED" "$RSS_AFTER" "$(nproc)" <<'EOF' | tee bench-results/scale.json
import json, sys
sys.path.insert(0, "scripts/bench")
import benv
load, sync, churn = (json.loads(x) for x in sys.argv[1:4])
empty, loaded, after, cpus = (int(x) for x in sys.argv[4:8])
print(json.dumps({
    "services": load["services"], "endpoints": load["endpoints"], "load_seconds": load["seconds"],
    "initial_sync_seconds": sync["seconds"], "change_to_all_workers_ms": churn,
    "proxy_rss_mib": {"empty_cluster": round(empty / 1024, 1), "loaded": round(loaded / 1024, 1),
                       "after_changes": round(after / 1024, 1),
                       "control_plane_delta": round((after - empty) / 1024, 1)},
    "cpus": cpus, "proxy_lcores": "main 0@(0-1), worker 1@1",
    "env": benv.collect(pinning="proxy lcores: main 0@(0-1), worker 1@1; API server and etcd unpinned",
                        hugepages="none (--no-huge)"),
}, indent=1))
EOF
