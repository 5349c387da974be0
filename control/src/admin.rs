//! Admin HTTP server: `/proxyMode`, `/healthz`, `/livez`, `/metrics`.
use crate::heartbeat::Heartbeat;
use crate::publisher::ControlMetrics;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dataplane::addr::{Addr, FlowKey, Proto, SockAddr};
use dataplane::dpdk::rcu::{Rcu, Reader};
use dataplane::stats::{DropReason, WorkerStats};
use dataplane::table::{Algorithm, Frontend, NoBackends, ServiceTable};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the admin server reports on.
#[derive(Clone)]
pub struct AdminState {
    /// Per-worker counters.
    pub workers: Arc<Vec<Arc<WorkerStats>>>,
    /// Control-side counters.
    pub control: Arc<ControlMetrics>,
    /// True once the first table is published and the workers run.
    pub ready: Arc<AtomicBool>,
    /// Worker progress: a stalled worker makes `/healthz` and `/livez` fail.
    pub heartbeat: Arc<Heartbeat>,
    /// Ports: (device name, DPDK port id), by port number.
    pub ports: Arc<Vec<(String, u16)>>,
    /// The workers' mbuf pools.
    pub pools: Arc<Vec<Arc<dataplane::dpdk::Mempool>>>,
    /// An RCU reader of the published table for `/debug/*` (kept offline
    /// between requests so it never delays a publish).
    pub table: Option<Arc<std::sync::Mutex<Reader<ServiceTable>>>>,
    /// Per-backend metrics for at most this many Service ports
    /// (`metrics.per_backend_services`).
    pub per_backend_services: usize,
}

/// Registers an admin reader on `rcu` at slot `id` (offline until used).
pub fn table_reader(
    rcu: &Arc<Rcu<ServiceTable>>,
    id: usize,
) -> Option<Arc<std::sync::Mutex<Reader<ServiceTable>>>> {
    let mut r = rcu.reader(id)?;
    r.offline();
    Some(Arc::new(std::sync::Mutex::new(r)))
}

/// Runs `f` on the current table (online only for the duration).
fn with_table<R>(s: &AdminState, f: impl FnOnce(&ServiceTable) -> R) -> Option<R> {
    let m = s.table.as_ref()?;
    let mut r = m.lock().unwrap_or_else(|e| e.into_inner());
    r.online();
    let out = f(r.read());
    r.offline();
    Some(out)
}

/// A frontend's backends (short-circuit ones included, each once) with
/// their active and total connections (node-wide, all workers).
fn connections(s: &dataplane::table::Service) -> Vec<(SockAddr, u64, u64)> {
    let mut rows = s.backend_connections();
    if let Some(c) = &s.short_circuit {
        for r in c.backend_connections() {
            // The same backend through the same frontend: the same counter.
            if !s.has_backend(&r.0) {
                rows.push(r);
            }
        }
    }
    rows
}

/// Per-backend rows for `/metrics`: (service name, backend, active, total)
/// for the first `cap` Service names in name order, the frontends of one
/// name (ClusterIP, NodePort, ...) summed; and the number of names left out.
pub fn backend_rows(t: &ServiceTable, cap: usize) -> (Vec<(String, String, u64, u64)>, usize) {
    use std::collections::BTreeMap;
    let mut by_name: BTreeMap<&str, Vec<&dataplane::table::Service>> = BTreeMap::new();
    for s in t.services() {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    let hidden = by_name.len().saturating_sub(cap);
    let mut rows = Vec::new();
    for (name, svcs) in by_name.into_iter().take(cap) {
        let mut per: BTreeMap<SockAddr, (u64, u64)> = BTreeMap::new();
        for s in svcs {
            for (b, active, total) in connections(s) {
                let e = per.entry(b).or_default();
                e.0 += active;
                e.1 += total;
            }
        }
        rows.extend(
            per.into_iter()
                .map(|(b, (a, t))| (name.to_string(), b.to_string(), a, t)),
        );
    }
    (rows, hidden)
}

fn services_json(t: &ServiceTable) -> serde_json::Value {
    let list: Vec<serde_json::Value> = t
        .services()
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "frontend": format!("{}/{}", s.frontend.addr, s.frontend.proto.as_str()),
                "backends": s.backends.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                "masquerade": s.masquerade,
                "external": s.external,
                "shortCircuit": s.short_circuit.iter().flat_map(|c| c.backends.iter().map(|b| b.to_string())).collect::<Vec<_>>(),
                "noEndpoints": match s.no_backends {
                    NoBackends::Reject => "reject",
                    NoBackends::Drop => "drop",
                },
                "sessionAffinityTimeoutSeconds": s.affinity_timeout,
                "loadBalancing": s.algorithm.name(),
                "sourceRanges": s.source_ranges.iter().map(|(a, l)| format!("{a}/{l}")).collect::<Vec<_>>(),
                "connections": connections(s).into_iter().map(|(b, active, total)| serde_json::json!({
                    "backend": b.to_string(), "active": active, "total": total,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({"tableVersion": t.version, "services": list})
}

/// Which backend a new connection would get, and why (no session state:
/// an existing session, or a remembered ClientIP choice, takes precedence).
pub fn explain(
    t: &ServiceTable,
    src: SocketAddr,
    dst: SocketAddr,
    proto: Proto,
) -> serde_json::Value {
    let key = FlowKey {
        src: Addr::from(src.ip()),
        dst: Addr::from(dst.ip()),
        sport: src.port(),
        dport: dst.port(),
        proto,
    };
    let fe = Frontend {
        addr: SockAddr::new(key.dst, key.dport),
        proto,
    };
    let Some(svc) = t.frontend(&fe).and_then(|i| t.service(i)) else {
        let route = t.route(&key.dst);
        return serde_json::json!({
            "service": null,
            "verdict": if route.is_some() { "routed (not a Service frontend)" } else { "dropped: no route" },
        });
    };
    if !svc.allows(&key.src) {
        return serde_json::json!({"service": svc.name, "verdict": "dropped: client outside loadBalancerSourceRanges"});
    }
    let svc = t.service_for(svc, &key.src);
    let by_client = || svc.pick(dataplane::affinity::client_hash(&key.src));
    // Round-robin and random have no answer ahead of time (and asking must
    // not move the live rotation): any candidate.
    let any = || svc.backends.first().copied();
    let (backend, how) = match (svc.affinity_timeout, svc.algorithm) {
        (Some(_), _) => (
            by_client(),
            "Maglev over the client IP (sessionAffinity ClientIP)",
        ),
        (None, Algorithm::Maglev) => (
            svc.pick(dataplane::addr::flow_hash(&key)),
            "Maglev over the 5-tuple",
        ),
        (None, Algorithm::SourceHash) => (by_client(), "source-hash: Maglev over the client IP"),
        (None, Algorithm::RoundRobin) => (any(), "round-robin: the next backend in the rotation"),
        (None, Algorithm::Random) => (any(), "random: any of the candidates"),
        (None, Algorithm::LeastConnections) => (
            any(),
            "least-connections: the candidate with the fewest active connections",
        ),
    };
    let decided = svc.affinity_timeout.is_some()
        || matches!(svc.algorithm, Algorithm::Maglev | Algorithm::SourceHash);
    let Some(b) = backend else {
        if svc.no_backends == NoBackends::Drop {
            return serde_json::json!({"service": svc.name, "verdict": "dropped: no endpoint on this node (traffic policy Local)"});
        }
        let how = if proto == Proto::Tcp {
            "TCP RST"
        } else {
            "ICMP port unreachable"
        };
        return serde_json::json!({"service": svc.name, "verdict": format!("rejected: no usable endpoints ({how})")});
    };
    let masq = t.needs_masquerade(svc, &key.src, &b.addr);
    serde_json::json!({
        "service": svc.name,
        "backend": decided.then(|| b.to_string()),
        "loadBalancing": svc.algorithm.name(),
        "verdict": "DNAT",
        "masquerade": decided.then_some(masq),
        "why": how,
        "candidates": svc.backends.len(),
    })
}

#[derive(serde::Deserialize)]
struct LookupQuery {
    src: String,
    dst: String,
    #[serde(default = "default_proto")]
    proto: String,
}

fn default_proto() -> String {
    "tcp".into()
}

async fn debug_services(State(s): State<AdminState>) -> Response {
    match with_table(&s, services_json) {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no table").into_response(),
    }
}

async fn debug_lookup(State(s): State<AdminState>, Query(q): Query<LookupQuery>) -> Response {
    let parse = |v: &str| v.parse::<SocketAddr>();
    let (Ok(src), Ok(dst)) = (parse(&q.src), parse(&q.dst)) else {
        return (
            StatusCode::BAD_REQUEST,
            "src and dst must be IP:PORT ([IPv6]:PORT)",
        )
            .into_response();
    };
    let proto = match q.proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => Proto::Sctp,
        _ => return (StatusCode::BAD_REQUEST, "proto must be tcp, udp or sctp").into_response(),
    };
    match with_table(&s, |t| explain(t, src, dst, proto)) {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no table").into_response(),
    }
}

/// `/debug/*` dumps the table (and is where anything that inspects or
/// changes dataplane state belongs): only for clients on this host, even
/// when the admin server listens on every address for metric scrapes.
async fn local_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if peer.ip().to_canonical().is_loopback() {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "/debug answers only on localhost\n").into_response()
    }
}

/// The router; serve it with the peer's address as `ConnectInfo`
/// (see [`serve`]).
pub fn router(state: AdminState) -> Router {
    let debug = Router::new()
        .route("/debug/services", get(debug_services))
        .route("/debug/lookup", get(debug_lookup))
        .route_layer(axum::middleware::from_fn(local_only));
    Router::new()
        .route("/proxyMode", get(|| async { "dpdk" }))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .merge(debug)
        .with_state(state)
}

/// The health server's router (kube-proxy's `--healthz-bind-address`):
/// `/healthz` and `/livez` only. It usually listens on every address, so it
/// exposes neither metrics nor the `/debug` views of the table.
pub fn health_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(state)
}

/// Serves the health router until the listener fails.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    state: AdminState,
) -> std::io::Result<()> {
    axum::serve(listener, health_router(state)).await
}

/// Serves until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// RFC 3339 UTC with milliseconds, as kube-proxy's healthz prints times.
fn rfc3339_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    health(s, false)
}

async fn livez(State(s): State<AdminState>) -> Response {
    health(s, true)
}

/// kube-proxy's `/healthz` and `/livez`: healthy once a table is programmed
/// (and, for `/healthz` only, while the node is eligible for traffic).
fn health(s: AdminState, livez: bool) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let last = s.control.last_sync_ms.load(Relaxed);
    let ready = s.ready.load(Relaxed);
    let eligible = s.control.node_eligible.load(Relaxed);
    let stalled = s.heartbeat.stalled();
    // Same shape as kube-proxy's healthz answer (+ the stalled workers).
    let mut body = serde_json::json!({
        "lastUpdated": if last > 0 { rfc3339_ms(last) } else { String::new() },
        "currentTime": rfc3339_ms(now),
        "nodeEligible": eligible,
    });
    if !stalled.is_empty() {
        body["stalledWorkers"] = stalled.clone().into();
    }
    // Like kube-proxy's: unhealthy while a change has waited longer than
    // the health timeout to be programmed (a stuck control loop).
    let pending = s.control.oldest_pending_ms.load(Relaxed);
    let timeout = s.control.health_timeout_ms.load(Relaxed);
    let stale = pending > 0 && timeout > 0 && now.saturating_sub(pending) > timeout;
    // A worker that stopped making progress: its queues are not served,
    // so the process is neither healthy nor live (a restart is due).
    let code = if ready && !stale && stalled.is_empty() && (eligible || livez) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Encodes worker and control counters on each scrape.
#[derive(Debug)]
struct Collector {
    workers: Arc<Vec<Arc<WorkerStats>>>,
    pools: Arc<Vec<Arc<dataplane::dpdk::Mempool>>>,
    heartbeat: Arc<Heartbeat>,
    control: Arc<ControlMetrics>,
    ports: Arc<Vec<(String, u16)>>,
    /// Per-backend rows ([`backend_rows`]) and the Services left out.
    backends: (Vec<(String, String, u64, u64)>, usize),
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

type Labels = Vec<(String, String)>;

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            // A metric without labels: `name value`, not `name{} value`.
            match ty {
                MetricType::Counter => ConstCounter::new(v).encode(fam)?,
                _ => ConstGauge::new(v as i64).encode(fam)?,
            }
            return Ok(());
        }
        let e = fam.encode_family(&labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(v).encode(e)?,
            _ => ConstGauge::new(v as i64).encode(e)?,
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let w = |i: usize| vec![("worker".to_string(), i.to_string())];
        macro_rules! per_worker {
            ($name:literal, $help:literal, $ty:expr, $field:ident) => {
                family(
                    &mut enc,
                    $name,
                    $help,
                    $ty,
                    self.workers
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (w(i), s.$field.load(Relaxed))),
                )?;
            };
        }
        use MetricType::{Counter, Gauge};
        per_worker!(
            "dpdk_kube_proxy_rx_packets",
            "Packets received from ports",
            Counter,
            rx_packets
        );
        per_worker!(
            "dpdk_kube_proxy_rx_bytes",
            "Bytes received from ports",
            Counter,
            rx_bytes
        );
        per_worker!(
            "dpdk_kube_proxy_tx_packets",
            "Packets transmitted",
            Counter,
            tx_packets
        );
        per_worker!(
            "dpdk_kube_proxy_tx_bytes",
            "Bytes transmitted",
            Counter,
            tx_bytes
        );
        per_worker!(
            "dpdk_kube_proxy_handoff_out_packets",
            "Packets handed to the owning worker",
            Counter,
            handoff_out
        );
        per_worker!(
            "dpdk_kube_proxy_handoff_in_packets",
            "Packets received from other workers",
            Counter,
            handoff_in
        );
        per_worker!(
            "dpdk_kube_proxy_sessions_created",
            "NAT sessions created",
            Counter,
            sessions_created
        );
        per_worker!(
            "dpdk_kube_proxy_sessions_expired",
            "NAT sessions expired",
            Counter,
            sessions_expired
        );
        per_worker!(
            "dpdk_kube_proxy_icmp_too_big_sent",
            "ICMP fragmentation-needed / packet-too-big sent for packets over an egress port's MTU",
            Counter,
            too_big_sent
        );
        per_worker!(
            "dpdk_kube_proxy_icmp_errors_translated",
            "ICMP errors about translated flows, translated (inner headers too) and forwarded",
            Counter,
            icmp_errors_translated
        );
        per_worker!(
            "dpdk_kube_proxy_sessions_clash_remapped",
            "New DNAT-only sessions whose client port was remapped (client address kept) to resolve a reply-tuple clash",
            Counter,
            sessions_clash_remapped
        );
        per_worker!(
            "dpdk_kube_proxy_sessions_masqueraded",
            "New sessions masqueraded (SNAT to a node address)",
            Counter,
            sessions_masqueraded
        );
        per_worker!(
            "dpdk_kube_proxy_sessions_flushed",
            "UDP sessions flushed because their endpoint went away",
            Counter,
            sessions_flushed
        );
        per_worker!(
            "dpdk_kube_proxy_flush_epochs_swept",
            "Table changes that removed endpoints after which the worker's sessions revalidated their endpoint",
            Counter,
            flush_epochs_swept
        );
        per_worker!(
            "dpdk_kube_proxy_flush_epochs_carried",
            "Table changes that removed endpoints no UDP session of the worker used: sessions kept without revalidation",
            Counter,
            flush_epochs_carried
        );
        per_worker!(
            "dpdk_kube_proxy_sessions_active",
            "NAT sessions live now",
            Gauge,
            sessions_active
        );
        per_worker!(
            "dpdk_kube_proxy_neighbors_active",
            "Neighbour (ARP/ND) cache entries, updated when the worker is idle",
            Gauge,
            neighbors_active
        );
        per_worker!(
            "dpdk_kube_proxy_neighbors_refused",
            "Unsolicited neighbours not learned because the cache was above three quarters full",
            Counter,
            neighbors_refused
        );
        per_worker!(
            "dpdk_kube_proxy_nat_forward_packets",
            "Packets DNATed client to backend",
            Counter,
            nat_forward
        );
        per_worker!(
            "dpdk_kube_proxy_nat_reverse_packets",
            "Reply packets translated backend to client",
            Counter,
            nat_reverse
        );
        per_worker!(
            "dpdk_kube_proxy_fast_path_packets",
            "Packets of established IPv4/IPv6 TCP/UDP sessions handled by the fast path",
            Counter,
            fast_path
        );
        per_worker!(
            "dpdk_kube_proxy_rejected_connections",
            "Connections rejected: Service has no endpoints",
            Counter,
            rejected
        );
        per_worker!(
            "dpdk_kube_proxy_routed_packets",
            "Packets routed without translation",
            Counter,
            routed
        );
        per_worker!(
            "dpdk_kube_proxy_neighbor_replies",
            "ARP/NDP requests answered",
            Counter,
            neighbor_replies
        );
        per_worker!(
            "dpdk_kube_proxy_neighbor_solicits",
            "ARP/NDP solicitations sent",
            Counter,
            neighbor_solicits
        );
        per_worker!(
            "dpdk_kube_proxy_echo_replies",
            "ICMP echo requests answered",
            Counter,
            echo_replies
        );
        per_worker!(
            "dpdk_kube_proxy_worker_table_version",
            "Service table version the worker uses",
            Gauge,
            table_version
        );
        per_worker!(
            "dpdk_kube_proxy_worker_loops",
            "Poll loop iterations",
            Counter,
            loops
        );
        family(
            &mut enc,
            "dpdk_kube_proxy_worker_stalled",
            "1 while the worker's poll loop has not moved for the stall timeout (health fails)",
            Gauge,
            (0..self.workers.len()).map(|i| (w(i), self.heartbeat.is_stalled(i) as u64)),
        )?;
        per_worker!(
            "dpdk_kube_proxy_worker_busy_cycles",
            "TSC cycles in poll loops that handled packets (cycles per packet = busy cycles / packets)",
            Counter,
            busy_cycles
        );
        per_worker!(
            "dpdk_kube_proxy_worker_idle_cycles",
            "TSC cycles in poll loops that found no packet",
            Counter,
            idle_cycles
        );
        per_worker!(
            "dpdk_kube_proxy_worker_tsc_hz",
            "TSC frequency of the cycle counters",
            Gauge,
            tsc_hz
        );
        family(
            &mut enc,
            "dpdk_kube_proxy_exception_packets",
            "Frames through the exception port: uplink to the host kernel (to_kernel) and the kernel's out of the uplink (from_kernel)",
            Counter,
            self.workers.iter().enumerate().flat_map(|(i, s)| {
                [
                    ("to_kernel", s.exception_to_kernel.load(Relaxed)),
                    ("from_kernel", s.exception_from_kernel.load(Relaxed)),
                ]
                .into_iter()
                .map(move |(d, v)| {
                    (
                        vec![
                            ("worker".to_string(), i.to_string()),
                            ("direction".to_string(), d.to_string()),
                        ],
                        v,
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_dropped_packets",
            "Packets dropped, by worker and reason",
            Counter,
            self.workers.iter().enumerate().flat_map(|(i, s)| {
                DropReason::ALL.iter().map(move |r| {
                    (
                        vec![
                            ("worker".to_string(), i.to_string()),
                            ("reason".to_string(), r.as_str().to_string()),
                        ],
                        s.drops_for(*r),
                    )
                })
            }),
        )?;
        // Mbuf pools: in use now (should come back to its idle level after
        // traffic: a leak shows as growth) and free.
        let pool = |i: usize| vec![("pool".to_string(), i.to_string())];
        family(
            &mut enc,
            "dpdk_kube_proxy_mempool_in_use",
            "Mbufs of the pool held now (rings, queues, packets waiting for a neighbour)",
            Gauge,
            self.pools
                .iter()
                .enumerate()
                .map(|(i, p)| (pool(i), u64::from(p.in_use()))),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_mempool_available",
            "Mbufs of the pool free now (pool and per-lcore caches)",
            Gauge,
            self.pools
                .iter()
                .enumerate()
                .map(|(i, p)| (pool(i), u64::from(p.available()))),
        )?;
        // Driver counters of each port (drops before the workers see packets).
        let counters: Vec<(Labels, dataplane::dpdk::PortCounters)> = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, (dev, id))| {
                let c = dataplane::dpdk::port_counters(*id).ok()?;
                Some((
                    vec![
                        ("port".to_string(), i.to_string()),
                        ("device".to_string(), dev.clone()),
                    ],
                    c,
                ))
            })
            .collect();
        macro_rules! per_port {
            ($name:literal, $help:literal, $field:ident) => {
                family(
                    &mut enc,
                    $name,
                    $help,
                    Counter,
                    counters.iter().map(|(l, c)| (l.clone(), c.$field)),
                )?;
            };
        }
        per_port!(
            "dpdk_kube_proxy_port_rx_packets",
            "Packets received by the port (driver)",
            ipackets
        );
        per_port!(
            "dpdk_kube_proxy_port_tx_packets",
            "Packets sent by the port (driver)",
            opackets
        );
        per_port!(
            "dpdk_kube_proxy_port_rx_missed",
            "Packets the port dropped: rx queues full",
            imissed
        );
        per_port!(
            "dpdk_kube_proxy_port_rx_errors",
            "Erroneous packets received",
            ierrors
        );
        per_port!(
            "dpdk_kube_proxy_port_tx_errors",
            "Failed transmissions",
            oerrors
        );
        per_port!(
            "dpdk_kube_proxy_port_rx_nombuf",
            "Rx mbuf allocation failures",
            rx_nombuf
        );
        let c = &self.control;
        let one = |v: u64| std::iter::once((Labels::new(), v));
        family(
            &mut enc,
            "dpdk_kube_proxy_table_version",
            "Version of the last published service table",
            Gauge,
            one(c.table_version.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_services",
            "Service ports in the current table",
            Gauge,
            one(c.services.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_config_reload_errors",
            "Config reloads rejected",
            Counter,
            one(c.reload_errors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_publish_grace_microseconds",
            "Last publish: swap until every worker passed a quiescent point",
            Gauge,
            one(c.last_grace_us.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Service events received from the API server",
            Counter,
            one(c.service_changes.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "EndpointSlice events received from the API server",
            Counter,
            one(c.endpoint_changes.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_watch_errors",
            "Watch errors (each retried with backoff)",
            Counter,
            one(c.watch_errors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_watch_expired",
            "Watches whose resource version expired (410 Gone), each relisted at once",
            Counter,
            c.watch_expired
                .rows()
                .map(|(r, v)| (vec![("resource".to_string(), r.to_string())], v)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_translate_errors",
            "Kubernetes objects that could not be translated (skipped)",
            Counter,
            one(c.translate_errors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_annotation_errors",
            "Service rebuilds with an annotation value that could not be used (the default applied)",
            Counter,
            one(c.annotation_errors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_kernel_routes",
            "Routes toward the exception port in the host kernel (ours, by their protocol number)",
            Gauge,
            one(c.kernel_routes.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_route_errors",
            "Failed netlink operations on the kernel routes (each retried at the next reconcile)",
            Counter,
            one(c.route_errors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_xdp_frontends",
            "Entries in the XDP frontend maps of shared ports (beside the kernel)",
            Gauge,
            one(c.xdp_frontends.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_xdp_errors",
            "Failed operations on the XDP maps or the kernel neighbour mirror (each retried)",
            Counter,
            one(c.xdp_errors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_xdp_redirected_packets",
            "Packets the shared ports' XDP programs handed the dataplane",
            Counter,
            one(c.xdp_redirected.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_xdp_passed_packets",
            "Packets the shared ports' XDP programs passed to the host kernel",
            Counter,
            one(c.xdp_passed.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_kernel_neighbors",
            "Kernel neighbours of shared ports mirrored into the dataplane",
            Gauge,
            one(c.kernel_neighbors.load(Relaxed)),
        )?;
        family(
            &mut enc,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            Gauge,
            one(c.last_sync_ms.load(Relaxed) / 1000),
        )?;
        let (rows, hidden) = &self.backends;
        let sb = |s: &str, b: &str| {
            vec![
                ("service".to_string(), s.to_string()),
                ("backend".to_string(), b.to_string()),
            ]
        };
        family(
            &mut enc,
            "dpdk_kube_proxy_backend_active_connections",
            "Open connections (sessions) per backend, all workers (first metrics.per_backend_services Services by name)",
            Gauge,
            rows.iter().map(|(s, b, a, _)| (sb(s, b), *a)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_backend_connections",
            "Connections (sessions) created per backend since it joined the Service",
            Counter,
            rows.iter().map(|(s, b, _, t)| (sb(s, b), *t)),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_backend_metrics_hidden_services",
            "Service names without per-backend series (beyond metrics.per_backend_services)",
            Gauge,
            one(*hidden as u64),
        )?;
        family(
            &mut enc,
            "dpdk_kube_proxy_backend_counters_exhausted",
            "Backends left without a connection counter (workers.backend_counters all in use)",
            Gauge,
            one(c.backend_counters_exhausted.load(Relaxed)),
        )?;
        Ok(())
    }
}

/// The hidden-Service count last logged, so the note is logged on changes
/// only.
static HIDDEN_LOGGED: AtomicUsize = AtomicUsize::new(0);

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut reg = Registry::default();
    reg.register(
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "SyncProxyRules latency in seconds (build + publish of a service table)",
        s.control.sync_duration.clone(),
    );
    reg.register(
        "kubeproxy_network_programming_duration_seconds",
        "From an EndpointSlice change (last-change-trigger-time) to every worker using it",
        s.control.network_programming.clone(),
    );
    let backends = with_table(&s, |t| backend_rows(t, s.per_backend_services)).unwrap_or_default();
    if HIDDEN_LOGGED.swap(backends.1, Relaxed) != backends.1 && backends.1 > 0 {
        tracing::info!(
            hidden = backends.1,
            shown = s.per_backend_services,
            "per-backend metrics cover the first metrics.per_backend_services Services by name; raise it to see the rest"
        );
    }
    reg.register_collector(Box::new(Collector {
        workers: s.workers.clone(),
        pools: s.pools.clone(),
        heartbeat: s.heartbeat.clone(),
        control: s.control.clone(),
        ports: s.ports.clone(),
        backends,
    }));
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &reg) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn backend_rows_are_capped_by_service_name_and_sum_frontends() {
        use dataplane::lbcount::{BackendCounters, CounterRegistry};
        use dataplane::table::{ServiceSpec, TableSpec};
        let be = |i: u8| SockAddr::new(Addr::v4([198, 18, 1, i]), 8080);
        let svc = |name: &str, vip: u8, port: u16| ServiceSpec {
            name: name.into(),
            frontend: Frontend {
                addr: SockAddr::new(Addr::v4([198, 18, 100, vip]), port),
                proto: Proto::Tcp,
            },
            backends: vec![be(1), be(2)],
            no_backends: Default::default(),
            masquerade: false,
            external: false,
            affinity_timeout: None,
            source_ranges: vec![],
            short_circuit: vec![],
            algorithm: Algorithm::LeastConnections,
        };
        // "b" has a ClusterIP and a NodePort frontend: one series per backend.
        let t = ServiceTable::new(
            TableSpec {
                services: vec![
                    svc("c", 3, 80),
                    svc("b", 2, 80),
                    svc("b", 0, 30080),
                    svc("a", 1, 80),
                ],
                ..Default::default()
            },
            1,
        );
        let mut reg = CounterRegistry::new(Arc::new(BackendCounters::new(16)));
        reg.update(&t, &[], true);
        let c = reg.counters().clone();
        for s in t.services().iter().filter(|s| s.name == "b") {
            c.open(s.counter_of(&be(1)));
        }
        let (rows, hidden) = backend_rows(&t, 2);
        assert_eq!(hidden, 1, "service c left out");
        assert_eq!(
            rows,
            vec![
                ("a".into(), be(1).to_string(), 0, 0),
                ("a".into(), be(2).to_string(), 0, 0),
                ("b".into(), be(1).to_string(), 2, 2),
                ("b".into(), be(2).to_string(), 0, 0),
            ]
        );
        assert_eq!(backend_rows(&t, 0), (vec![], 3));
        // /debug/services carries them per frontend.
        let v = services_json(&t);
        let b = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "b")
            .unwrap();
        assert_eq!(b["connections"][0]["active"], 1);
        assert_eq!(b["connections"][0]["backend"], be(1).to_string());
    }

    #[tokio::test]
    async fn debug_views_answer_only_on_localhost() {
        let state = AdminState {
            workers: Arc::new(vec![Arc::new(WorkerStats::default())]),
            control: Arc::new(ControlMetrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            heartbeat: Arc::new(Heartbeat::new(1, 0)),
            ports: Arc::new(vec![]),
            pools: Arc::new(vec![]),
            table: None,
            per_backend_services: 100,
        };
        // Through `serve`: the peer is this host (no table here: 503, past
        // the check).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = l.local_addr().unwrap();
        tokio::spawn(serve(l, state.clone()));
        let r = get(local, "/debug/services").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        // A peer elsewhere (as when metricsBindAddress is 0.0.0.0).
        for peer in ["198.18.0.5:40000", "[2001:2::5]:40000"] {
            let app = router(state.clone()).layer(axum::extract::connect_info::MockConnectInfo(
                peer.parse::<SocketAddr>().unwrap(),
            ));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let remote = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await });
            for p in [
                "/debug/services",
                "/debug/lookup?src=198.18.0.2:1&dst=198.18.100.1:80",
            ] {
                let r = get(remote, p).await;
                assert!(r.starts_with("HTTP/1.1 403"), "{peer} {p}: {r}");
            }
            let r = get(remote, "/metrics").await;
            assert!(r.starts_with("HTTP/1.1 200"), "{peer}: {r}");
        }
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let workers = Arc::new(vec![
            Arc::new(WorkerStats::default()),
            Arc::new(WorkerStats::default()),
        ]);
        workers[1].count_drop(DropReason::NoRoute);
        WorkerStats::add(&workers[1].exception_to_kernel, 3);
        WorkerStats::add(&workers[0].rx_packets, 7);
        let state = AdminState {
            workers,
            control: Arc::new(ControlMetrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
            heartbeat: Arc::new(Heartbeat::new(2, 1000)),
            ports: Arc::new(vec![]),
            pools: Arc::new(vec![]),
            table: None,
            per_backend_services: 100,
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ready = state.ready.clone();
        let control = state.control.clone();
        let heartbeat = state.heartbeat.clone();
        let workers = state.workers.clone();
        tokio::spawn(serve(l, state.clone()));
        let hl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let haddr = hl.local_addr().unwrap();
        tokio::spawn(serve_health(hl, state.clone()));
        let r = get(haddr, "/metrics").await;
        assert!(
            r.starts_with("HTTP/1.1 404"),
            "health server exposes metrics: {r}"
        );
        let r = get(haddr, "/debug/services").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(haddr, "/livez").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let r = get(addr, "/proxyMode").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("dpdk"), "{r}");
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        ready.store(true, Relaxed);
        control.last_sync_ms.store(1_700_000_000_123, Relaxed);
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.contains(r#""lastUpdated":"2023-11-14T22:13:20.123Z""#),
            "{r}"
        );
        assert!(r.contains(r#""nodeEligible":true"#), "{r}");
        // A node being removed: /healthz fails, /livez does not.
        control.node_eligible.store(false, Relaxed);
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains(r#""nodeEligible":false"#), "{r}");
        let r = get(addr, "/livez").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        control.network_programming.observe(0.3);
        // A change queued longer than the health timeout: both fail.
        control.node_eligible.store(true, Relaxed);
        control.health_timeout_ms.store(60_000, Relaxed);
        control
            .oldest_pending_ms
            .store(crate::publisher::now_ms() - 61_000, Relaxed);
        for p in ["/healthz", "/livez"] {
            let r = get(addr, p).await;
            assert!(r.starts_with("HTTP/1.1 503"), "{p}: {r}");
        }
        control
            .oldest_pending_ms
            .store(crate::publisher::now_ms() - 1_000, Relaxed);
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "recent pending change: {r}");
        control.oldest_pending_ms.store(0, Relaxed);
        // Worker 1 stops making progress: both fail and name it.
        heartbeat.observe(&workers, 1_000);
        WorkerStats::add(&workers[0].loops, 1);
        heartbeat.observe(&workers, 2_001);
        for p in ["/healthz", "/livez"] {
            let r = get(addr, p).await;
            assert!(r.starts_with("HTTP/1.1 503"), "{p}: {r}");
            assert!(r.contains(r#""stalledWorkers":[1]"#), "{p}: {r}");
        }
        let r = get(addr, "/metrics").await;
        assert!(
            r.contains(r#"dpdk_kube_proxy_worker_stalled{worker="1"} 1"#)
                && r.contains(r#"dpdk_kube_proxy_worker_stalled{worker="0"} 0"#),
            "{r}"
        );
        WorkerStats::add(&workers[1].loops, 1);
        heartbeat.observe(&workers, 2_100);
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200"), "worker moved again: {r}");
        assert!(!r.contains("stalledWorkers"), "{r}");
        let r = get(addr, "/metrics").await;
        assert!(
            r.contains(r#"dpdk_kube_proxy_dropped_packets_total{worker="1",reason="no_route"} 1"#),
            "{r}"
        );
        assert!(
            r.contains(
                r#"dpdk_kube_proxy_exception_packets_total{worker="1",direction="to_kernel"} 3"#
            ) && r.contains(
                r#"dpdk_kube_proxy_exception_packets_total{worker="0",direction="from_kernel"} 0"#
            ),
            "{r}"
        );
        assert!(
            r.contains(r#"dpdk_kube_proxy_rx_packets_total{worker="0"} 7"#),
            "{r}"
        );
        assert!(
            r.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1700000000"),
            "{r}"
        );
        assert!(
            r.contains(r#"kubeproxy_network_programming_duration_seconds_bucket{le="0.5"} 1"#),
            "{r}"
        );
        // Expired watches, by resource (every resource listed, from 0).
        control.watch_expired.inc("endpointslices");
        control.watch_expired.inc("endpointslices");
        control
            .kernel_routes
            .store(5, std::sync::atomic::Ordering::Relaxed);
        control
            .route_errors
            .store(3, std::sync::atomic::Ordering::Relaxed);
        control
            .xdp_frontends
            .store(9, std::sync::atomic::Ordering::Relaxed);
        control
            .xdp_redirected
            .store(11, std::sync::atomic::Ordering::Relaxed);
        control
            .kernel_neighbors
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let r = get(addr, "/metrics").await;
        for want in [
            "# TYPE dpdk_kube_proxy_kernel_routes gauge",
            "dpdk_kube_proxy_kernel_routes 5",
            "dpdk_kube_proxy_route_errors_total 3",
            "# TYPE dpdk_kube_proxy_xdp_frontends gauge",
            "dpdk_kube_proxy_xdp_frontends 9",
            "dpdk_kube_proxy_xdp_redirected_packets_total 11",
            "dpdk_kube_proxy_xdp_passed_packets_total 0",
            "dpdk_kube_proxy_xdp_errors_total 0",
            "dpdk_kube_proxy_kernel_neighbors 2",
            r#"dpdk_kube_proxy_watch_expired_total{resource="services"} 0"#,
            r#"dpdk_kube_proxy_watch_expired_total{resource="endpointslices"} 2"#,
            r#"dpdk_kube_proxy_watch_expired_total{resource="nodes"} 0"#,
        ] {
            assert!(r.contains(want), "{want}: {r}");
        }
    }
}
