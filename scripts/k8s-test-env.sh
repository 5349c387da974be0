#!/usr/bin/env bash
# A real kube-apiserver + etcd on 127.0.0.1 for tests, without Docker.
#
#   scripts/k8s-test-env.sh build                  build/cache kube-apiserver and etcd (scripts/k8s/build.sh)
#   scripts/k8s-test-env.sh up DIR                 start etcd + kube-apiserver with all state in DIR
#   scripts/k8s-test-env.sh down DIR               stop both and remove DIR (safe after a failed/partial up)
#   scripts/k8s-test-env.sh restart-apiserver DIR  kill kube-apiserver and start it again with the same flags
#   scripts/k8s-test-env.sh kill-apiserver DIR     SIGKILL kube-apiserver (a crash: no graceful shutdown)
#   scripts/k8s-test-env.sh start-apiserver DIR    start kube-apiserver again (same flags) and wait until ready
#   scripts/k8s-test-env.sh compact-etcd DIR       compact etcd at its current revision (older resource
#                                                  versions expire: watches resuming from them get 410 Gone)
#   scripts/k8s-test-env.sh status DIR             exit 0 when both processes run and /readyz is ok
#   scripts/k8s-test-env.sh selftest               build, up, REST smoke test, restart, down
#
# After `up`, DIR holds:
#   kubeconfig   server https://127.0.0.1:PORT, CA data; context "dkp-test" uses a static
#                bearer token (group system:masters), context "dkp-test-cert" a client cert
#   env          KEY=VALUE lines (shell-sourceable): KUBECONFIG, DKP_K8S_SERVER, DKP_K8S_TOKEN,
#                DKP_K8S_CA, DKP_K8S_CLIENT_CERT/KEY, DKP_K8S_SERVICE_CIDR, DKP_ETCD_ENDPOINT,
#                DKP_ETCD_PID, DKP_APISERVER_PID, ...
#   pki/         CA, serving cert (127.0.0.1, localhost, kubernetes.default.svc, the
#                kubernetes Service IP), admin client cert, service-account key pair, token file
#   etcd/        etcd data;  *.log  process logs;  *.pid  process ids
#
# Environment: DKP_K8S_CACHE, DKP_K8S_VERSION, DKP_ETCD_VERSION (see scripts/k8s/build.sh),
#   DKP_K8S_SERVICE_CIDR (default 198.18.128.0/17, must stay inside 198.18.0.0/15),
#   DKP_K8S_READY_TIMEOUT (seconds, default 180), DKP_K8S_APISERVER_ARGS (extra flags).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/scripts/k8s/build.sh
SERVICE_CIDR=${DKP_K8S_SERVICE_CIDR:-198.18.128.0/17}
READY_TIMEOUT=${DKP_K8S_READY_TIMEOUT:-180}
MARKER=.dkp-k8s-test-env

log() { echo "k8s-test-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  ((${#missing[@]} == 0)) && return 0
  # openssl and curl come from Debian packages of the same name.
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  else
    die "missing tools: ${missing[*]}"
  fi
}

abs_dir() { # absolute path of $1 without requiring it to exist
  local d=$1
  [[ -n $d ]] || die "DIR argument required"
  [[ $d == /* ]] || d=$PWD/$d
  [[ $d =~ [[:space:]] ]] && die "DIR must not contain whitespace: '$d'"
  d=$(realpath -m "$d")
  [[ $d == / || $d == "$HOME" || $d == /tmp || $d == /root ]] && die "refusing to use '$d' as DIR"
  echo "$d"
}

# free_ports N: N distinct currently-free TCP ports on 127.0.0.1.
free_ports() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
  else
    local ports=() p
    while ((${#ports[@]} < $1)); do
      p=$((20000 + RANDOM % 30000))
      ss -Htln "sport = :$p" | grep -q . && continue
      [[ " ${ports[*]} " == *" $p "* ]] && continue
      ports+=("$p")
    done
    echo "${ports[*]}"
  fi
}

# alive PID: the process exists and is not a zombie waiting for its (new) parent to reap it.
alive() {
  local st
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  st=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# pid_ours PID DIR: PID is alive and its command line mentions DIR (guards against PID reuse).
# /proc/PID/cmdline reads empty for an instant while the process execs (the
# new image's arguments are not set up yet): spawn's wrapper shell execs the
# server right after writing its pid file, so an empty read is retried before
# it counts as "not ours" (it once made a healthy kube-apiserver look dead).
pid_ours() {
  local pid=$1 dir=$2 cmd i
  for ((i = 0; i < 20; i++)); do
    alive "$pid" || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    if [[ -n $cmd ]]; then
      [[ $cmd == *"$dir/"* ]]
      return
    fi
    sleep 0.05
  done
  return 1
}

# stop_pid PID DIR NAME: TERM, wait up to 15s, then KILL.
stop_pid() {
  local pid=$1 dir=$2 name=$3 i
  pid_ours "$pid" "$dir" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    pid_ours "$pid" "$dir" || return 0
    sleep 0.1
  done
  log "$name did not exit after SIGTERM; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do pid_ours "$pid" "$dir" || return 0; sleep 0.1; done
  log "warning: $name (pid $pid) still alive"
}

# spawn DIR NAME BIN ARGS...: start detached (own session), log to DIR/NAME.log, pid to DIR/NAME.pid.
spawn() {
  local dir=$1 name=$2
  shift 2
  rm -f "$dir/$name.pid"
  # The inner shell records its own pid and then execs the binary, so the pid
  # file names the server process itself whether or not setsid forks.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/$name.pid" "$@" \
    >>"$dir/$name.log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $dir/$name.pid ]] && break; sleep 0.05; done
  [[ -s $dir/$name.pid ]] || die "$name did not start"
}

# wait_until SECONDS DIR NAME CMD...: retry CMD until it succeeds; fail early if NAME died.
wait_until() {
  local timeout=$1 dir=$2 name=$3 pid
  shift 3
  local deadline=$((SECONDS + timeout))
  pid=$(cat "$dir/$name.pid")
  while ! "$@" >/dev/null 2>&1; do
    if ! pid_ours "$pid" "$dir"; then
      log "$name exited during startup; last log lines:"
      tail -n 30 "$dir/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${timeout}s; last log lines:"
      tail -n 30 "$dir/$name.log" >&2 || true
      return 1
    fi
    sleep 0.25
  done
}

gen_pki() {
  local p=$1/pki
  mkdir -p "$p"
  chmod 700 "$p"
  local first_svc_ip
  first_svc_ip=$(python3 -c 'import ipaddress,sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$SERVICE_CIDR" 2>/dev/null || echo 198.18.128.1)
  cat >"$p/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:$first_svc_ip
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  local o=(openssl)
  "${o[@]}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$p/ca.key" 2>/dev/null
  "${o[@]}" req -x509 -new -config "$p/openssl.cnf" -extensions ca -key "$p/ca.key" \
    -subj "/CN=dpdk-kube-proxy-test-ca" -days 3650 -sha256 -out "$p/ca.crt"
  local name subj
  for name in apiserver admin; do
    if [[ $name == apiserver ]]; then subj="/CN=kube-apiserver"; else subj="/O=system:masters/CN=dkp-admin"; fi
    "${o[@]}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$p/$name.key" 2>/dev/null
    "${o[@]}" req -new -config "$p/openssl.cnf" -key "$p/$name.key" -subj "$subj" -out "$p/$name.csr"
    local ext=server
    [[ $name == admin ]] && ext=client
    "${o[@]}" x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
      -days 365 -sha256 -extfile "$p/openssl.cnf" -extensions "$ext" -out "$p/$name.crt" 2>/dev/null
  done
  # service-account token signing key (RS256)
  "${o[@]}" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$p/sa.key" 2>/dev/null
  "${o[@]}" pkey -in "$p/sa.key" -pubout -out "$p/sa.pub"
  # static token: token,user,uid,"groups"
  local token
  token=$("${o[@]}" rand -hex 24)
  echo "$token,dkp-admin,dkp-admin,\"system:masters\"" >"$p/tokens.csv"
  echo "$token" >"$p/token"
  chmod 600 "$p"/*.key "$p/tokens.csv" "$p/token"
}

write_kubeconfig() {
  local dir=$1 port=$2 p=$1/pki
  b64() { base64 -w0 <"$1"; }
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dkp-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(b64 "$p/ca.crt")
users:
- name: dkp-admin
  user:
    token: $(cat "$p/token")
- name: dkp-admin-cert
  user:
    client-certificate-data: $(b64 "$p/admin.crt")
    client-key-data: $(b64 "$p/admin.key")
contexts:
- name: dkp-test
  context:
    cluster: dkp-test
    user: dkp-admin
- name: dkp-test-cert
  context:
    cluster: dkp-test
    user: dkp-admin-cert
current-context: dkp-test
EOF
  chmod 600 "$dir/kubeconfig"
}

readyz() { # DIR PORT
  curl -fsS --max-time 5 --cacert "$1/pki/ca.crt" -H "Authorization: Bearer $(cat "$1/pki/token")" \
    "https://127.0.0.1:$2/readyz" | grep -qx ok
}

etcd_health() { curl -fsS --max-time 3 "http://127.0.0.1:$1/health" | grep -q '"health":"true"'; }

start_apiserver() {
  local dir=$1 bin
  bin=$(sed -n 1p "$dir/kube-apiserver.args")
  mapfile -t args < <(sed 1d "$dir/kube-apiserver.args")
  spawn "$dir" kube-apiserver "$bin" "${args[@]}"
  local t0=$SECONDS
  # shellcheck disable=SC1091
  local port
  port=$(sed -n 's/^DKP_APISERVER_PORT=//p' "$dir/ports")
  wait_until "$READY_TIMEOUT" "$dir" kube-apiserver readyz "$dir" "$port" || return 1
  log "kube-apiserver ready on https://127.0.0.1:$port in $((SECONDS - t0))s (pid $(cat "$dir/kube-apiserver.pid"))"
}

write_env() {
  local dir=$1 p=$1/pki
  # shellcheck disable=SC1091
  source "$dir/ports"
  cat >"$dir/env.tmp" <<EOF
KUBECONFIG=$dir/kubeconfig
DKP_K8S_DIR=$dir
DKP_K8S_SERVER=https://127.0.0.1:$DKP_APISERVER_PORT
DKP_K8S_TOKEN=$(cat "$p/token")
DKP_K8S_CA=$p/ca.crt
DKP_K8S_CLIENT_CERT=$p/admin.crt
DKP_K8S_CLIENT_KEY=$p/admin.key
DKP_K8S_SERVICE_CIDR=$SERVICE_CIDR
DKP_K8S_VERSION=$DKP_K8S_VERSION_USED
DKP_APISERVER_PORT=$DKP_APISERVER_PORT
DKP_APISERVER_PID=$(cat "$dir/kube-apiserver.pid")
DKP_ETCD_ENDPOINT=http://127.0.0.1:$DKP_ETCD_CLIENT_PORT
DKP_ETCD_PID=$(cat "$dir/etcd.pid")
EOF
  mv -f "$dir/env.tmp" "$dir/env"
}

status() {
  local dir
  dir=$(abs_dir "${1:-}")
  [[ -f $dir/env && -f $dir/ports ]] || return 1
  # shellcheck disable=SC1091
  source "$dir/ports"
  pid_ours "$(cat "$dir/etcd.pid" 2>/dev/null)" "$dir" || return 1
  pid_ours "$(cat "$dir/kube-apiserver.pid" 2>/dev/null)" "$dir" || return 1
  etcd_health "$DKP_ETCD_CLIENT_PORT" && readyz "$dir" "$DKP_APISERVER_PORT"
}

down() {
  local dir
  dir=$(abs_dir "${1:-}")
  if [[ ! -e $dir ]]; then log "$dir does not exist; nothing to do"; return 0; fi
  [[ -f $dir/$MARKER ]] || die "$dir was not made by '$0 up' (no $MARKER); not touching it"
  local name pid
  for name in kube-apiserver etcd; do
    pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
    [[ -n $pid ]] && stop_pid "$pid" "$dir" "$name"
  done
  # Fallback when a pid file was lost (e.g. up killed mid-spawn): any process
  # whose arguments name a path inside DIR belongs to this environment.
  local f exe
  for f in /proc/[0-9]*; do
    pid=${f#/proc/}
    exe=$(readlink "$f/exe" 2>/dev/null || true)
    case ${exe##*/} in kube-apiserver-*|etcd-*) ;; *) continue ;; esac
    pid_ours "$pid" "$dir" && stop_pid "$pid" "$dir" "leftover ${exe##*/}"
  done
  rm -rf "$dir"
  log "down: removed $dir"
}

# start_stack DIR APISERVER_BIN ETCD_BIN: pick ports, start etcd, then kube-apiserver.
start_stack() {
  local dir=$1 apiserver=$2 etcd=$3
  local ports
  read -r -a ports <<<"$(free_ports 3)"
  cat >"$dir/ports" <<EOF
DKP_ETCD_CLIENT_PORT=${ports[0]}
DKP_ETCD_PEER_PORT=${ports[1]}
DKP_APISERVER_PORT=${ports[2]}
EOF
  local ec=http://127.0.0.1:${ports[0]} ep=http://127.0.0.1:${ports[1]}
  local t0=$SECONDS
  spawn "$dir" etcd "$etcd" \
    --name=dkp-test --data-dir="$dir/etcd" \
    --listen-client-urls="$ec" --advertise-client-urls="$ec" \
    --listen-peer-urls="$ep" --initial-advertise-peer-urls="$ep" \
    --initial-cluster="dkp-test=$ep" --initial-cluster-state=new \
    --unsafe-no-fsync --quota-backend-bytes=1073741824 --log-level=warn
  wait_until 60 "$dir" etcd etcd_health "${ports[0]}" || return 1
  log "etcd ready on $ec in $((SECONDS - t0))s (pid $(cat "$dir/etcd.pid"))"

  local p=$dir/pki
  # First line: binary; then one flag per line (restart-apiserver replays it).
  {
    echo "$apiserver"
    printf '%s\n' \
      --bind-address=127.0.0.1 \
      --advertise-address=127.0.0.1 \
      --secure-port="${ports[2]}" \
      --etcd-servers="$ec" \
      --service-cluster-ip-range="$SERVICE_CIDR" \
      --tls-cert-file="$p/apiserver.crt" \
      --tls-private-key-file="$p/apiserver.key" \
      --client-ca-file="$p/ca.crt" \
      --token-auth-file="$p/tokens.csv" \
      --authorization-mode=RBAC \
      --anonymous-auth=false \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$p/sa.pub" \
      --service-account-signing-key-file="$p/sa.key" \
      --api-audiences=https://kubernetes.default.svc.cluster.local \
      --endpoint-reconciler-type=none \
      --disable-admission-plugins=ServiceAccount \
      --allow-privileged=true \
      --profiling=false \
      --cert-dir="$dir/apiserver-certs"
    # shellcheck disable=SC2086
    [[ -n ${DKP_K8S_APISERVER_ARGS:-} ]] && printf '%s\n' $DKP_K8S_APISERVER_ARGS
    true
  } >"$dir/kube-apiserver.args"
  write_kubeconfig "$dir" "${ports[2]}"
  start_apiserver "$dir"
}

up() {
  local dir
  dir=$(abs_dir "${1:-}")
  need openssl curl
  local t_start=$SECONDS
  if [[ -e $dir ]]; then
    if [[ -f $dir/$MARKER ]]; then
      if status "$dir"; then log "already up ($dir/env)"; cat "$dir/env"; return 0; fi
      log "$dir holds a stale or partial environment; tearing it down first"
      down "$dir"
    elif [[ -n $(ls -A "$dir") ]]; then
      die "$dir exists, is not empty and was not made by this script"
    fi
  fi
  mkdir -p "$dir"
  touch "$dir/$MARKER"
  # From here on, a failure leaves DIR for inspection; `down DIR` cleans it.
  trap 'log "up failed; logs in '"$dir"'; run: $0 down '"$dir"'"' ERR

  local bins apiserver etcd
  mapfile -t bins < <("$BUILD" build)
  apiserver=${bins[0]} etcd=${bins[1]}
  [[ -x $apiserver && -x $etcd ]] || die "build did not produce binaries"
  DKP_K8S_VERSION_USED=$(basename "$apiserver"); DKP_K8S_VERSION_USED=${DKP_K8S_VERSION_USED#kube-apiserver-}

  gen_pki "$dir"

  # Ports are picked free but only bound later; when something else takes one
  # in between (parallel test runs), start over with fresh ports.
  local attempt
  for attempt in 1 2 3; do
    if start_stack "$dir" "$apiserver" "$etcd"; then break; fi
    if ((attempt < 3)) && grep -qs 'address already in use' "$dir/etcd.log" "$dir/kube-apiserver.log"; then
      log "port collision; retrying with other ports"
      stop_pid "$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)" "$dir" kube-apiserver
      stop_pid "$(cat "$dir/etcd.pid" 2>/dev/null || true)" "$dir" etcd
      rm -rf "$dir/etcd" "$dir"/*.log "$dir"/*.pid
      continue
    fi
    false
  done
  write_env "$dir"
  trap - ERR
  log "up in $((SECONDS - t_start))s: source $dir/env  (KUBECONFIG=$dir/kubeconfig)"
  cat "$dir/env"
}

restart_apiserver() {
  local dir
  dir=$(abs_dir "${1:-}")
  [[ -f $dir/$MARKER && -f $dir/kube-apiserver.args ]] || die "$dir is not an environment made by 'up'"
  stop_pid "$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)" "$dir" kube-apiserver
  DKP_K8S_VERSION_USED=$(sed -n 's/^DKP_K8S_VERSION=//p' "$dir/env" 2>/dev/null || true)
  start_apiserver "$dir"
  write_env "$dir"
}

kill_apiserver() {
  local dir pid i
  dir=$(abs_dir "${1:-}")
  [[ -f $dir/$MARKER ]] || die "$dir is not an environment made by 'up'"
  pid=$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)
  pid_ours "$pid" "$dir" || die "kube-apiserver is not running"
  kill -KILL "$pid"
  for ((i = 0; i < 100; i++)); do pid_ours "$pid" "$dir" || break; sleep 0.05; done
  pid_ours "$pid" "$dir" && die "kube-apiserver (pid $pid) survived SIGKILL"
  log "kube-apiserver (pid $pid) killed"
}

start_apiserver_again() {
  local dir pid
  dir=$(abs_dir "${1:-}")
  [[ -f $dir/$MARKER && -f $dir/kube-apiserver.args ]] || die "$dir is not an environment made by 'up'"
  pid=$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)
  pid_ours "$pid" "$dir" && die "kube-apiserver is running (pid $pid)"
  DKP_K8S_VERSION_USED=$(sed -n 's/^DKP_K8S_VERSION=//p' "$dir/env" 2>/dev/null || true)
  start_apiserver "$dir"
  write_env "$dir"
}

# Through etcd's gRPC gateway (no etcdctl needed): the current revision from a
# range request, then a physical compaction at it.
compact_etcd() {
  local dir port rev
  dir=$(abs_dir "${1:-}")
  [[ -f $dir/$MARKER && -f $dir/ports ]] || die "$dir is not an environment made by 'up'"
  port=$(sed -n 's/^DKP_ETCD_CLIENT_PORT=//p' "$dir/ports")
  rev=$(curl -fsS --max-time 5 -X POST "http://127.0.0.1:$port/v3/kv/range" -d '{"key":"AA==","limit":1}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
  [[ $rev =~ ^[0-9]+$ ]] || die "no etcd revision"
  curl -fsS --max-time 30 -X POST "http://127.0.0.1:$port/v3/kv/compaction" \
    -d "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
  log "etcd compacted at revision $rev"
  echo "$rev"
}

selftest() {
  need curl openssl python3
  local dir t0 passed=0 failed=0
  dir=$(mktemp -d /tmp/dkp-k8s-selftest.XXXXXX)
  # shellcheck disable=SC2064
  trap "'$0' down '$dir' >/dev/null 2>&1 || true" EXIT
  step() { # NAME OK DETAIL
    if [[ $2 == 0 ]]; then passed=$((passed + 1)); echo "  ok    $1  ($3)"; else failed=$((failed + 1)); echo "  FAIL  $1  ($3)"; fi
  }
  smoke() { # PHASE
    local o
    o=$(python3 "$ROOT/scripts/k8s/smoke.py" --env "$dir/env" --phase "$1") || true
    echo "$o"
    local n
    n=$(sed -nE 's/^smoke .*: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' <<<"$o")
    if [[ -n $n ]]; then passed=$((passed + ${n% *})); failed=$((failed + ${n#* })); else failed=$((failed + 1)); fi
  }
  t0=$SECONDS
  "$BUILD" build >/dev/null
  step "build (or cache hit)" $? "$((SECONDS - t0))s"
  t0=$SECONDS
  local rc=0
  "$0" up "$dir" >/dev/null || rc=$?
  step "up $dir" $rc "$((SECONDS - t0))s"
  if ((rc == 0)); then
    smoke create
    t0=$SECONDS
    rc=0
    "$0" restart-apiserver "$dir" || rc=$?
    step "restart-apiserver" $rc "$((SECONDS - t0))s"
    ((rc == 0)) && smoke after-restart
  fi
  local apid epid p left=""
  apid=$(sed -n 's/^DKP_APISERVER_PID=//p' "$dir/env" 2>/dev/null || true)
  epid=$(sed -n 's/^DKP_ETCD_PID=//p' "$dir/env" 2>/dev/null || true)
  t0=$SECONDS
  rc=0
  "$0" down "$dir" || rc=$?
  trap - EXIT
  for p in $apid $epid; do alive "$p" && left+=" pid $p"; done
  [[ -e $dir ]] && left+=" $dir"
  [[ -n $left ]] && rc=1
  step "down: processes stopped, DIR removed" $rc "$((SECONDS - t0))s${left:+, left:$left}"
  echo "selftest: $passed passed, $failed failed"
  ((failed == 0))
}

cmd=${1:-}
shift || true
case "$cmd" in
  build) "$BUILD" build ;;
  up) up "$@" ;;
  down) down "$@" ;;
  restart-apiserver) restart_apiserver "$@" ;;
  kill-apiserver) kill_apiserver "$@" ;;
  start-apiserver) start_apiserver_again "$@" ;;
  compact-etcd) compact_etcd "$@" ;;
  status) status "$@" ;;
  selftest) selftest ;;
  -h|--help|help|"") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command '$cmd'" ;;
esac
