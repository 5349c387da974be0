//! Builds service tables and publishes them to the workers (RCU swap).
use dataplane::dpdk::rcu::{Leaked, Rcu};
use dataplane::lbcount::{BackendCounters, CounterRegistry};
use dataplane::table::{FlushEpoch, Frontend, Service, ServiceTable, TableSpec};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Per-backend connection counters of a [`Publisher::new`] (128 bytes each).
pub const DEFAULT_BACKEND_COUNTERS: usize = 16_384;

/// How long a publish waits for every worker to pass a quiescent point.
const GRACE_TIMEOUT: Duration = Duration::from_secs(5);

/// Control-side counters, read by the admin server.
#[derive(Debug)]
pub struct ControlMetrics {
    /// kube-proxy's `sync_proxy_rules_duration_seconds` histogram.
    pub sync_duration: Histogram,
    /// Version of the last published table.
    pub table_version: AtomicU64,
    /// Unix time (ms) of the last successful publish.
    pub last_sync_ms: AtomicU64,
    /// Duration (µs) of the last build + publish.
    pub last_sync_us: AtomicU64,
    /// Total syncs.
    pub syncs: AtomicU64,
    /// Time (µs) from swap to every worker having passed a quiescent point, last publish.
    pub last_grace_us: AtomicU64,
    /// Config reloads rejected (parse/validation errors).
    pub reload_errors: AtomicU64,
    /// Services in the current table.
    pub services: AtomicU64,
    /// kube-proxy's `network_programming_duration_seconds`: from an
    /// EndpointSlice change (its `last-change-trigger-time`) to every worker
    /// using the table with it.
    pub network_programming: Histogram,
    /// Service events received from the API server.
    pub service_changes: AtomicU64,
    /// EndpointSlice events received from the API server.
    pub endpoint_changes: AtomicU64,
    /// Watch errors (each is retried with backoff).
    pub watch_errors: AtomicU64,
    /// Resource versions that expired ("410 Gone"), by resource: each one
    /// relisted at once.
    pub watch_expired: crate::watch::ExpiredCounts,
    /// Kubernetes objects that could not be translated (logged, skipped).
    pub translate_errors: AtomicU64,
    /// Service rebuilds with an annotation value that could not be used
    /// (logged; the default applied).
    pub annotation_errors: AtomicU64,
    /// Backends left without a connection counter because every counter
    /// was in use (`workers.backend_counters`).
    pub backend_counters_exhausted: AtomicU64,
    /// False when the node is being deleted or about to be removed by the
    /// cluster autoscaler (`/healthz` then answers 503, like kube-proxy).
    pub node_eligible: std::sync::atomic::AtomicBool,
    /// Unix time (ms) since which a change waits to be published; 0: none.
    pub oldest_pending_ms: AtomicU64,
    /// Routes with our mark in the host kernel (toward the exception port).
    pub kernel_routes: AtomicU64,
    /// Failed netlink operations on those routes (each retried).
    pub route_errors: AtomicU64,
    /// Entries in the XDP frontend maps of shared ports.
    pub xdp_frontends: AtomicU64,
    /// Failed operations on those maps or the neighbour mirror (retried).
    pub xdp_errors: AtomicU64,
    /// Packets the shared ports' XDP programs handed the dataplane.
    pub xdp_redirected: AtomicU64,
    /// Packets those programs passed to the kernel.
    pub xdp_passed: AtomicU64,
    /// Kernel neighbours mirrored into the dataplane (shared ports).
    pub kernel_neighbors: AtomicU64,
    /// A change waiting longer than this (ms) makes the proxy unhealthy
    /// (kube-proxy: 2 × syncPeriod); 0: never.
    pub health_timeout_ms: AtomicU64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// kube-proxy's buckets for `network_programming_duration_seconds`.
fn programming_buckets() -> Vec<f64> {
    let mut b = vec![0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

impl Default for ControlMetrics {
    fn default() -> Self {
        ControlMetrics {
            // kube-proxy's buckets: 1 ms doubling 15 times.
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            table_version: AtomicU64::new(0),
            last_sync_ms: AtomicU64::new(0),
            last_sync_us: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            last_grace_us: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
            services: AtomicU64::new(0),
            network_programming: Histogram::new(programming_buckets()),
            service_changes: AtomicU64::new(0),
            endpoint_changes: AtomicU64::new(0),
            watch_errors: AtomicU64::new(0),
            watch_expired: Default::default(),
            translate_errors: AtomicU64::new(0),
            annotation_errors: AtomicU64::new(0),
            backend_counters_exhausted: AtomicU64::new(0),
            node_eligible: std::sync::atomic::AtomicBool::new(true),
            oldest_pending_ms: AtomicU64::new(0),
            kernel_routes: AtomicU64::new(0),
            route_errors: AtomicU64::new(0),
            xdp_frontends: AtomicU64::new(0),
            xdp_errors: AtomicU64::new(0),
            xdp_redirected: AtomicU64::new(0),
            xdp_passed: AtomicU64::new(0),
            kernel_neighbors: AtomicU64::new(0),
            health_timeout_ms: AtomicU64::new(0),
        }
    }
}

/// Publishes tables. One per process; used from one thread at a time.
pub struct Publisher {
    rcu: Arc<Rcu<ServiceTable>>,
    version: u64,
    /// The flush epoch of the last table (see [`ServiceTable::epoch`]).
    epoch: FlushEpoch,
    /// The Services of the last table (to tell whether a new one removed
    /// any backend).
    last: Vec<Arc<Service>>,
    live: HashSet<Frontend>,
    retired: HashMap<Frontend, Instant>,
    retain: Duration,
    leaked: Mutex<Vec<Leaked>>,
    /// Per-backend connection counters handed to each table's Services.
    counters: CounterRegistry,
    /// Counters.
    pub metrics: Arc<ControlMetrics>,
}

impl Publisher {
    /// A publisher whose RCU cell starts with an empty table, for `readers`
    /// readers (the workers, plus one for the admin server).
    pub fn new(readers: usize) -> Self {
        Self::with_backend_counters(readers, DEFAULT_BACKEND_COUNTERS)
    }

    /// [`Publisher::new`] with room for `n` per-backend connection counters
    /// (backends of all Services together; see [`dataplane::lbcount`]).
    pub fn with_backend_counters(readers: usize, n: usize) -> Self {
        Publisher {
            rcu: Rcu::new(ServiceTable::new(TableSpec::default(), 0), readers.max(1)),
            version: 0,
            epoch: FlushEpoch::default(),
            last: Vec::new(),
            live: HashSet::new(),
            retired: HashMap::new(),
            retain: Duration::from_secs(86_400),
            leaked: Mutex::new(Vec::new()),
            counters: CounterRegistry::new(Arc::new(BackendCounters::new(n))),
            metrics: Arc::new(ControlMetrics::default()),
        }
    }

    /// The node-wide per-backend connection counters: the workers' session
    /// tables count into them ([`dataplane::worker::DataplaneConfig::backend_counters`]).
    pub fn backend_counters(&self) -> Arc<BackendCounters> {
        self.counters.counters().clone()
    }

    /// Keep removed frontends steering existing sessions for this long
    /// (the longest session timeout).
    pub fn set_retention(&mut self, d: Duration) {
        self.retain = d;
    }

    /// The RCU cell workers read from.
    pub fn rcu(&self) -> &Arc<Rcu<ServiceTable>> {
        &self.rcu
    }

    /// Builds a table from `spec` and publishes it; blocks until the old table
    /// is unreachable (or the grace period times out, in which case the old
    /// table is kept alive and freed on a later publish). Returns the new version.
    pub fn publish(&mut self, spec: TableSpec) -> u64 {
        self.publish_with(spec, Vec::new())
    }

    /// Like [`Publisher::publish`], with Services built earlier added to the
    /// table as they are (see [`ServiceTable::with_services`]).
    pub fn publish_with(&mut self, mut spec: TableSpec, built: Vec<Arc<Service>>) -> u64 {
        let start = Instant::now();
        let live: HashSet<Frontend> = spec
            .services
            .iter()
            .map(|s| s.frontend)
            .chain(built.iter().map(|s| s.frontend))
            .collect();
        for gone in self.live.difference(&live) {
            self.retired.insert(*gone, start);
        }
        let retain = self.retain;
        self.retired
            .retain(|f, at| !live.contains(f) && start.duration_since(*at) < retain);
        spec.retired.extend(self.retired.keys().copied());
        self.live = live;
        self.version += 1;
        let n = (spec.services.len() + built.len()) as u64;
        let mut table = ServiceTable::with_services(spec, built, self.version);
        // Counters for new Services' backends (kept backends keep theirs);
        // draining ones are reused only when no older table can be in use.
        let reclaim = self
            .leaked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        self.counters.update(&table, &self.last, reclaim);
        self.metrics
            .backend_counters_exhausted
            .store(self.counters.exhausted, Ordering::Relaxed);
        // Sessions need revalidating only when some backend or frontend of
        // the last table is gone.
        table.inherit_flush_epoch(&self.epoch, &self.last);
        self.epoch = table.epoch.clone();
        self.last = table.services().to_vec();
        let grace = match self
            .rcu
            .publish(table, Duration::from_micros(20), GRACE_TIMEOUT)
        {
            Ok(d) => d,
            Err(l) => {
                tracing::warn!("a worker did not pass a quiescent point within {GRACE_TIMEOUT:?}; old table kept alive");
                self.leaked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(l);
                GRACE_TIMEOUT
            }
        };
        // Retry freeing tables of earlier timed-out publishes.
        let mut leaked = self.leaked.lock().unwrap_or_else(|e| e.into_inner());
        let old: Vec<Leaked> = leaked.drain(..).collect();
        for l in old {
            if let Err(l) = self.rcu.retry_free(l, Duration::from_millis(1)) {
                leaked.push(l);
            }
        }
        drop(leaked);
        let m = &self.metrics;
        let took = start.elapsed().as_micros() as u64;
        m.table_version.store(self.version, Ordering::Relaxed);
        m.last_sync_us.store(took, Ordering::Relaxed);
        m.sync_duration.observe(took as f64 / 1e6);
        m.syncs.fetch_add(1, Ordering::Relaxed);
        m.last_grace_us
            .store(grace.as_micros() as u64, Ordering::Relaxed);
        m.services.store(n, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        m.last_sync_ms.store(now, Ordering::Relaxed);
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::addr::{Addr, Proto, SockAddr};
    use dataplane::table::{Frontend, ServiceSpec};

    #[test]
    fn publish_swaps_tables_and_counts() {
        let mut p = Publisher::new(2);
        let mut r = p.rcu().reader(0).unwrap();
        assert_eq!(r.read().version, 0);
        r.quiescent();
        let spec = TableSpec {
            services: vec![ServiceSpec {
                source_ranges: vec![],
                affinity_timeout: None,
                masquerade: false,
                external: false,
                no_backends: Default::default(),
                short_circuit: vec![],
                algorithm: Default::default(),
                name: "a".into(),
                frontend: Frontend {
                    addr: SockAddr::new(Addr::v4([198, 18, 100, 1]), 80),
                    proto: Proto::Tcp,
                },
                backends: vec![SockAddr::new(Addr::v4([198, 18, 1, 1]), 80)],
            }],
            ..Default::default()
        };
        // The reader is online and quiescent, so the publish completes.
        let v = std::thread::scope(|s| {
            let h = s.spawn(|| p.publish(spec));
            while !h.is_finished() {
                r.quiescent();
            }
            h.join().unwrap()
        });
        assert_eq!(v, 1);
        assert_eq!(r.read().version, 1);
        assert_eq!(r.read().services().len(), 1);
        assert_eq!(p.metrics.table_version.load(Ordering::Relaxed), 1);
        assert_eq!(p.metrics.services.load(Ordering::Relaxed), 1);
        // Removing the Service retires its frontend.
        let f = r.read().services()[0].frontend;
        r.quiescent();
        std::thread::scope(|s| {
            let h = s.spawn(|| p.publish(TableSpec::default()));
            while !h.is_finished() {
                r.quiescent();
            }
        });
        assert!(r.read().is_retired(&f));
        assert!(r.read().frontend(&f).is_none());
    }

    #[test]
    fn backend_counters_survive_publishes_for_kept_backends() {
        let mut p = Publisher::with_backend_counters(1, 8);
        let be = |i: u8| SockAddr::new(Addr::v4([198, 18, 1, i]), 80);
        let spec = |backends: Vec<SockAddr>| TableSpec {
            services: vec![ServiceSpec {
                source_ranges: vec![],
                affinity_timeout: None,
                masquerade: false,
                external: false,
                no_backends: Default::default(),
                short_circuit: vec![],
                algorithm: Default::default(),
                name: "a".into(),
                frontend: Frontend {
                    addr: SockAddr::new(Addr::v4([198, 18, 100, 1]), 80),
                    proto: Proto::Tcp,
                },
                backends,
            }],
            ..Default::default()
        };
        let mut r = p.rcu().reader(0).unwrap();
        let id_of = |r: &mut dataplane::dpdk::rcu::Reader<ServiceTable>, b: SockAddr| {
            let s = &r.read().services()[0];
            s.counter_of(&b)
        };
        p.publish(spec(vec![be(1), be(2)]));
        let c = p.backend_counters();
        let (a1, a2) = (id_of(&mut r, be(1)), id_of(&mut r, be(2)));
        assert_ne!(a1, a2);
        c.open(a1);
        c.open(a1);
        c.open(a2);
        // Rebuilt from the spec (a new Service): backend 1 keeps its count.
        p.publish(spec(vec![be(1), be(3)]));
        assert_eq!(id_of(&mut r, be(1)), a1);
        let s = r.read().services()[0].clone();
        let rows = s.backend_connections();
        assert_eq!(rows, vec![(be(1), 2, 2), (be(3), 0, 0)]);
        assert_eq!(
            p.metrics.backend_counters_exhausted.load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn flush_epoch_moves_only_when_a_backend_or_frontend_goes() {
        // No readers registered online: publishes complete at once.
        let mut p = Publisher::new(1);
        let be = |i: u8| SockAddr::new(Addr::v4([198, 18, 1, i]), 80);
        let svc = |vip: u8, backends: Vec<SockAddr>, sc: Vec<SockAddr>| ServiceSpec {
            source_ranges: vec![],
            affinity_timeout: None,
            masquerade: false,
            external: false,
            no_backends: Default::default(),
            short_circuit: sc,
            algorithm: Default::default(),
            name: format!("s{vip}"),
            frontend: Frontend {
                addr: SockAddr::new(Addr::v4([198, 18, 100, vip]), 80),
                proto: Proto::Udp,
            },
            backends,
        };
        let epoch = |p: &mut Publisher, services: Vec<ServiceSpec>| {
            let v = p.publish(TableSpec {
                services,
                ..Default::default()
            });
            (v, p.epoch.current)
        };
        let (v1, e1) = epoch(&mut p, vec![svc(1, vec![be(1), be(2)], vec![])]);
        assert_eq!(v1, 1);
        // Adding a backend, or a Service: sessions stay valid.
        let (v2, e2) = epoch(&mut p, vec![svc(1, vec![be(1), be(2), be(3)], vec![])]);
        assert_eq!((v2, e2), (2, e1));
        let (_, e3) = epoch(
            &mut p,
            vec![
                svc(1, vec![be(1), be(2), be(3)], vec![]),
                svc(2, vec![be(4)], vec![]),
            ],
        );
        assert_eq!(e3, e1);
        // A backend moving to the short-circuit set (still reachable): valid.
        let (_, e4) = epoch(
            &mut p,
            vec![
                svc(1, vec![be(1), be(2)], vec![be(3)]),
                svc(2, vec![be(4)], vec![]),
            ],
        );
        assert_eq!(e4, e1);
        // Removing a backend: a new epoch (that table's version).
        let (v5, e5) = epoch(
            &mut p,
            vec![svc(1, vec![be(1)], vec![]), svc(2, vec![be(4)], vec![])],
        );
        assert_eq!(e5, v5);
        // Removing a Service: a new epoch too.
        let (v6, e6) = epoch(&mut p, vec![svc(1, vec![be(1)], vec![])]);
        assert_eq!(e6, v6);
        // Shared (already built) Services are compared by pointer.
        let shared = p.last.clone();
        let v7 = p.publish_with(TableSpec::default(), shared);
        assert_eq!((v7, p.epoch.current), (v6 + 1, v6));
        // The epoch is what the published table carries.
        let mut r = p.rcu().reader(0).unwrap();
        assert_eq!((r.read().version, r.read().epoch.current), (v7, v6));
    }
}
