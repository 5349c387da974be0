//! The immutable service table the control thread publishes to the workers.
//!
//! A table is built once from a plain [`TableSpec`], never mutated, and swapped
//! in atomically (see [`crate::dpdk::rcu`]); workers read it once per burst.
use crate::addr::{flow_hash, Addr, FlowKey, Proto, SockAddr};
use crate::affinity::client_hash;
use crate::lbcount::{ServiceCounters, NO_COUNTER};
use crate::maglev::{stable_key, Maglev};
use crate::packet::ethernet::MacAddr;
use crossbeam_utils::CachePadded;
use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// A Service frontend: the address, port and protocol clients connect to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Frontend {
    /// VIP and port.
    pub addr: SockAddr,
    /// Protocol.
    pub proto: Proto,
}

/// What a new connection to a frontend without backends gets (kube-proxy's
/// REJECT vs DROP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoBackends {
    /// The Service has no usable endpoints at all: REJECT (TCP RST, ICMP(v6)
    /// port unreachable), counted as `rejected`.
    #[default]
    Reject,
    /// The Service has endpoints, but none this frontend's `Local` traffic
    /// policy may use (no endpoint on this node): DROP, counted as
    /// [`crate::stats::DropReason::NoLocalEndpoints`].
    Drop,
}

/// How a Service picks the backend of a new connection (issue 8). Session
/// affinity, when set, takes precedence; traffic policies decide the
/// candidate backends before the algorithm picks one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Consistent hashing of the connection's 5-tuple: the same choice on
    /// every core and node, about 1/N of flows move when one of N backends
    /// goes.
    #[default]
    Maglev,
    /// Strict rotation over the backends, shared by all workers (one
    /// relaxed atomic add per new connection, never per packet).
    RoundRobin,
    /// Uniformly random, from a per-worker generator.
    Random,
    /// Consistent hashing of the client address only: one client, one
    /// backend, from every core (without affinity state or timeout).
    SourceHash,
    /// The backend with the fewest active connections, counted node-wide
    /// ([`crate::lbcount`]); ties go to the first from a random offset, so
    /// workers picking at once still spread.
    LeastConnections,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Maglev,
        Algorithm::RoundRobin,
        Algorithm::Random,
        Algorithm::SourceHash,
        Algorithm::LeastConnections,
    ];

    /// The name used in configuration, annotations and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Maglev => "maglev",
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Random => "random",
            Algorithm::SourceHash => "source-hash",
            Algorithm::LeastConnections => "least-connections",
        }
    }

    /// Parses a configured name; `None` when unknown.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// What the control plane says about one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Name for metrics and logs (`namespace/name:port`).
    pub name: String,
    /// The frontend.
    pub frontend: Frontend,
    /// Ready backends. Empty: new connections get [`ServiceSpec::no_backends`].
    pub backends: Vec<SockAddr>,
    /// What new connections get when `backends` is empty.
    pub no_backends: NoBackends,
    /// Always masquerade (SNAT to the node) new connections, e.g. external
    /// frontends under `externalTrafficPolicy: Cluster`.
    pub masquerade: bool,
    /// An external frontend (NodePort, externalIP, load-balancer IP), not a
    /// ClusterIP: `masqueradeAll` and the off-cluster-client rule, which
    /// kube-proxy applies to ClusterIP traffic only, do not apply; only
    /// `masquerade` (and hairpin) does.
    pub external: bool,
    /// `sessionAffinity: ClientIP` with this `timeoutSeconds`.
    pub affinity_timeout: Option<u32>,
    /// `loadBalancerSourceRanges`: when non-empty, new connections from other
    /// clients are dropped.
    pub source_ranges: Vec<(Addr, u8)>,
    /// kube-proxy's short-circuit for an external frontend under
    /// `externalTrafficPolicy: Local`: the cluster-wide endpoints, used
    /// instead of `backends` by clients in the cluster CIDRs (pods) and on a
    /// node address (the host, which is masqueraded). Empty: none.
    pub short_circuit: Vec<SockAddr>,
    /// How new connections pick a backend.
    pub algorithm: Algorithm,
}

/// When kube-proxy would masquerade traffic to ClusterIPs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasqueradePolicy {
    /// `masqueradeAll`: masquerade every Service connection.
    pub all: bool,
    /// Cluster (pod) CIDRs: clients outside them are off-cluster and are
    /// masqueraded. Empty: no off-cluster detection.
    pub cluster_cidrs: Vec<(Addr, u8)>,
}

/// A node address on a port, with its prefix length (a connected route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    /// DPDK port index.
    pub port: u16,
    /// The address.
    pub addr: Addr,
    /// Prefix length of the connected subnet.
    pub prefix_len: u8,
}

/// A static route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub prefix: Addr,
    /// Prefix length.
    pub len: u8,
    /// Egress port.
    pub port: u16,
    /// Next hop; `None` for an on-link destination.
    pub via: Option<Addr>,
}

/// A static neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticNeighbor {
    /// The neighbour's address.
    pub addr: Addr,
    /// Its MAC.
    pub mac: MacAddr,
    /// The port it is on.
    pub port: u16,
}

/// Everything a table is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSpec {
    /// Service ports.
    pub services: Vec<ServiceSpec>,
    /// Node addresses.
    pub interfaces: Vec<Interface>,
    /// Static routes (connected routes come from `interfaces`).
    pub routes: Vec<Route>,
    /// Static neighbours.
    pub neighbors: Vec<StaticNeighbor>,
    /// Masquerade rules.
    pub masquerade: MasqueradePolicy,
    /// Frontends removed recently whose sessions may still be live. They
    /// translate no new flows, but packets to them are still steered by
    /// client endpoint, so existing sessions keep working on any worker.
    pub retired: Vec<Frontend>,
}

/// One Service port as the workers see it.
#[derive(Debug)]
pub struct Service {
    /// Name for metrics and logs.
    pub name: String,
    /// The frontend.
    pub frontend: Frontend,
    /// Ready backends.
    pub backends: Vec<SockAddr>,
    /// What new connections get when `backends` is empty.
    pub no_backends: NoBackends,
    /// Always masquerade new connections.
    pub masquerade: bool,
    /// An external frontend (see [`ServiceSpec::external`]).
    pub external: bool,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Allowed client prefixes (empty: all).
    pub source_ranges: Vec<(Addr, u8)>,
    /// The same frontend over the cluster-wide endpoints, for in-cluster and
    /// host clients (see [`ServiceSpec::short_circuit`]).
    pub short_circuit: Option<Box<Service>>,
    /// How new connections pick a backend.
    pub algorithm: Algorithm,
    keys: Vec<u16>,
    maglev: Maglev,
    /// Round-robin position, shared by every worker (own cache line: new
    /// connections to other Services do not bounce it).
    rr: CachePadded<AtomicU64>,
    /// Per-backend connection counters, set once by the control plane
    /// before the table is published ([`crate::lbcount::CounterRegistry`]).
    lb: OnceLock<ServiceCounters>,
}

impl Service {
    /// Builds the Service's Maglev table.
    pub fn new(mut spec: ServiceSpec) -> Self {
        // Sorted: the same backend set gives the same Maglev table on every
        // node whatever order the endpoints were listed in, and membership
        // checks are a binary search.
        spec.backends.sort_unstable();
        spec.backends.dedup();
        let short_circuit = (!spec.short_circuit.is_empty()).then(|| {
            Box::new(Service::new(ServiceSpec {
                name: spec.name.clone(),
                frontend: spec.frontend,
                backends: core::mem::take(&mut spec.short_circuit),
                no_backends: NoBackends::Reject,
                masquerade: false,
                external: spec.external,
                affinity_timeout: spec.affinity_timeout,
                source_ranges: vec![],
                short_circuit: vec![],
                algorithm: spec.algorithm,
            }))
        });
        let keys: Vec<u64> = spec
            .backends
            .iter()
            .map(|b| stable_key(b.to_string().as_bytes()))
            .collect();
        Service {
            name: spec.name,
            frontend: spec.frontend,
            maglev: Maglev::new(&keys),
            keys: spec
                .backends
                .iter()
                .map(crate::affinity::backend_key)
                .collect(),
            backends: spec.backends,
            no_backends: spec.no_backends,
            masquerade: spec.masquerade,
            external: spec.external,
            affinity_timeout: spec.affinity_timeout,
            source_ranges: spec.source_ranges,
            short_circuit,
            algorithm: spec.algorithm,
            rr: CachePadded::new(AtomicU64::new(0)),
            lb: OnceLock::new(),
        }
    }

    /// The backends' connection counters, once assigned.
    #[inline]
    pub fn counters(&self) -> Option<&ServiceCounters> {
        self.lb.get()
    }

    /// Assigns the backends' counters (`c.ids` in the order of
    /// [`Service::backends`]); false when already assigned or of the wrong
    /// length (then nothing changes).
    pub fn set_counters(&self, c: ServiceCounters) -> bool {
        c.ids.len() == self.backends.len() && self.lb.set(c).is_ok()
    }

    /// The counter index of backend `b` ([`NO_COUNTER`] when uncounted):
    /// a binary search, on session creation only.
    #[inline]
    pub fn counter_of(&self, b: &SockAddr) -> u32 {
        match (self.lb.get(), self.backends.binary_search(b)) {
            (Some(c), Ok(i)) => c.ids.get(i).copied().unwrap_or(NO_COUNTER),
            _ => NO_COUNTER,
        }
    }

    /// Each backend with its active and total connections (zeros without
    /// counters), for metrics and inspection.
    pub fn backend_connections(&self) -> Vec<(SockAddr, u64, u64)> {
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (active, total) = self.lb.get().map_or((0, 0), |c| {
                    let id = c.ids.get(i).copied().unwrap_or(NO_COUNTER);
                    (
                        c.counters.active(id).unwrap_or(0),
                        c.counters.total(id).unwrap_or(0),
                    )
                });
                (*b, active, total)
            })
            .collect()
    }
    /// The backend whose [`crate::affinity::backend_key`] is `key`, if any.
    #[inline]
    pub fn backend_by_key(&self, key: u16) -> Option<SockAddr> {
        self.keys
            .iter()
            .position(|k| *k == key)
            .map(|i| self.backends[i])
    }

    /// True when `client` may open connections (`loadBalancerSourceRanges`).
    #[inline]
    pub fn allows(&self, client: &Addr) -> bool {
        self.source_ranges.is_empty()
            || self
                .source_ranges
                .iter()
                .any(|(p, l)| client.in_prefix(p, *l))
    }

    /// True when `b` is one of this Service's backends.
    #[inline]
    pub fn has_backend(&self, b: &SockAddr) -> bool {
        self.backends.binary_search(b).is_ok()
    }
    /// The backend for new connection `key` by the Service's algorithm
    /// (`rng`: the worker's generator state). `None` without backends.
    #[inline]
    pub fn pick_new(&self, key: &FlowKey, rng: &mut u64) -> Option<SockAddr> {
        let n = self.backends.len() as u64;
        if n == 0 {
            return None;
        }
        let i = match self.algorithm {
            Algorithm::Maglev => return self.pick(flow_hash(key)),
            Algorithm::SourceHash => return self.pick(client_hash(&key.src)),
            Algorithm::RoundRobin => self.rr.fetch_add(1, Relaxed) % n,
            // Multiply-shift: uniform over 0..n without a division.
            Algorithm::Random => ((u128::from(next_random(rng)) * u128::from(n)) >> 64) as u64,
            Algorithm::LeastConnections => {
                let start = ((u128::from(next_random(rng)) * u128::from(n)) >> 64) as u64;
                let Some(c) = self.lb.get() else {
                    // No counters (not published by a control plane): random.
                    return self.backends.get(start as usize).copied();
                };
                self.least_connected(c, start as usize)
            }
        };
        self.backends.get(i as usize).copied()
    }

    /// The index of the backend with the fewest active connections, the
    /// first from `start` on ties (uncounted backends come last).
    #[inline]
    fn least_connected(&self, c: &ServiceCounters, start: usize) -> u64 {
        let n = c.ids.len();
        let (mut best, mut least) = (start, u64::MAX);
        let mut i = start;
        for _ in 0..n {
            let active = c.counters.active(c.ids[i]).unwrap_or(u64::MAX);
            if active < least {
                (best, least) = (i, active);
                if active == 0 {
                    break;
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        best as u64
    }

    /// The Maglev backend for a flow whose hash is `hash`, if there is one.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<SockAddr> {
        self.maglev
            .lookup(hash)
            .and_then(|i| self.backends.get(i as usize).copied())
    }
}

/// The next number of a worker's xorshift64* generator (`state` never 0).
#[inline]
pub fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// At most this many removed (frontend, backend) pairs are remembered per
/// epoch change; a larger change makes every session check its Service.
pub const MAX_REMOVED: usize = 64;

/// A table's flush epoch: the version of the latest table that removed a
/// backend or a frontend some session may use (a table's own version unless
/// its publisher called [`ServiceTable::inherit_flush_epoch`]), the epoch
/// before it, and the pairs that change removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushEpoch {
    /// The epoch.
    pub current: u64,
    /// The epoch before.
    pub previous: u64,
    /// What the change from `previous` to `current` removed; `None`:
    /// unknown or more than [`MAX_REMOVED`]. Set with [`FlushEpoch::new`],
    /// which keeps `filter` in step.
    removed: Option<Vec<(Frontend, SockAddr)>>,
    /// [`backend_bit`] of every backend in `removed`: a backend whose bit
    /// is clear is not among them.
    filter: u64,
}

/// A backend's bit in [`FlushEpoch`]'s filter (its address's last four
/// bytes and port, hashed to one of 64 bits).
#[inline(always)]
fn backend_bit(b: &SockAddr) -> u64 {
    let a = &b.addr.0;
    let w = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]) ^ (u32::from(b.port) << 7);
    1 << (w.wrapping_mul(0x9E37_79B1) >> 26)
}

impl FlushEpoch {
    /// The epoch `current` after `previous`, whose change removed `removed`
    /// (`None`: unknown).
    pub fn new(current: u64, previous: u64, removed: Option<Vec<(Frontend, SockAddr)>>) -> Self {
        let filter = removed
            .iter()
            .flatten()
            .fold(0, |f, (_, b)| f | backend_bit(b));
        FlushEpoch {
            current,
            previous,
            removed,
            filter,
        }
    }

    /// True when a UDP session to `backend` that was valid at the epoch
    /// before this one (the worker says so: `behind`) surely still has
    /// it: the change to this epoch is known and the backend's filter bit
    /// is clear, so it is not among what that change removed. False says
    /// nothing: ask [`ServiceTable::backend_still_valid`]. The fast path
    /// asks this first, inline, so that after a removal the sessions of
    /// every other backend revalidate without a call.
    #[inline(always)]
    pub fn surely_kept(&self, behind: bool, backend: &SockAddr) -> bool {
        behind && self.removed.is_some() && self.filter & backend_bit(backend) == 0
    }

    /// What the change from `previous` to `current` removed (`None`:
    /// unknown or more than [`MAX_REMOVED`]).
    pub fn removed(&self) -> Option<&[(Frontend, SockAddr)]> {
        self.removed.as_deref()
    }
}

/// The result of a route lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Egress port.
    pub port: u16,
    /// The address whose MAC the frame goes to.
    pub addr: Addr,
}

/// The immutable table. See the module docs.
#[derive(Debug, Default)]
pub struct ServiceTable {
    /// Monotonic version, set by the publisher.
    pub version: u64,
    /// The flush epoch: sessions are revalidated (stale UDP flows flushed)
    /// only when it changes, so publications that only add backends or
    /// Services cost the packet path nothing (see [`FlushEpoch`]).
    pub epoch: FlushEpoch,
    frontends: HashMap<Frontend, u32>,
    services: Vec<Arc<Service>>,
    local: HashMap<Addr, u16>,
    vips: HashMap<Addr, ()>,
    routes: Vec<Route>,
    /// `routes` in lookup form: (network, mask, v4, index into `routes`).
    lpm: Vec<(u128, u128, bool, u32)>,
    neighbors: Vec<StaticNeighbor>,
    retired: HashMap<Frontend, ()>,
    masquerade: MasqueradePolicy,
    interfaces: Vec<Interface>,
}

impl ServiceTable {
    /// Builds a table. Duplicate frontends: the first one wins.
    pub fn new(spec: TableSpec, version: u64) -> Self {
        Self::with_services(spec, Vec::new(), version)
    }

    /// Builds a table from `spec` plus Services built earlier (after those of
    /// `spec`). Built Services are shared with the previous table, not rebuilt:
    /// a change to one Service costs its own Maglev build, and publishing
    /// touches every other Service only to index it (DESIGN.md decision 3).
    pub fn with_services(spec: TableSpec, built: Vec<Arc<Service>>, version: u64) -> Self {
        let mut t = ServiceTable {
            version,
            epoch: FlushEpoch::new(version, version, None),
            ..Default::default()
        };
        let n = spec.services.len() + built.len();
        t.frontends.reserve(n);
        t.services.reserve(n);
        let fresh = spec.services.into_iter().map(|s| Arc::new(Service::new(s)));
        for s in fresh.chain(built) {
            if t.frontends.contains_key(&s.frontend) {
                continue;
            }
            t.vips.insert(s.frontend.addr.addr, ());
            t.frontends.insert(s.frontend, t.services.len() as u32);
            t.services.push(s);
        }
        t.interfaces = spec.interfaces.clone();
        for i in &spec.interfaces {
            t.local.insert(i.addr, i.port);
            t.routes.push(Route {
                prefix: i.addr,
                len: i.prefix_len,
                port: i.port,
                via: None,
            });
        }
        t.routes.extend(spec.routes);
        // Longest prefix first; IPv4 lengths count from bit 96 of the mapped form.
        t.routes.sort_by_key(|r| {
            std::cmp::Reverse(r.len as u32 + if r.prefix.is_v4() { 96 } else { 0 })
        });
        t.lpm = t
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let v4 = r.prefix.is_v4();
                let bits = (r.len as u32 + if v4 { 96 } else { 0 }).min(128);
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                (u128::from_be_bytes(r.prefix.0) & mask, mask, v4, i as u32)
            })
            .collect();
        t.neighbors = spec.neighbors;
        t.masquerade = spec.masquerade;
        for f in spec.retired {
            if !t.frontends.contains_key(&f) {
                t.retired.insert(f, ());
            }
        }
        t
    }

    /// True when a new connection from `client` to `svc`'s `backend` must be
    /// masqueraded: the Service says so, hairpin (a backend reaching itself,
    /// or one on the client's link), for an external frontend a client on a
    /// node address, or, for a ClusterIP frontend, `masqueradeAll` or an
    /// off-cluster client.
    #[inline]
    pub fn needs_masquerade(&self, svc: &Service, client: &Addr, backend: &Addr) -> bool {
        let m = &self.masquerade;
        svc.masquerade
            || client == backend
            || (svc.external && self.local.contains_key(client))
            || (!svc.external
                && (m.all
                    || (!m.cluster_cidrs.is_empty()
                        && !m.cluster_cidrs.iter().any(|(p, l)| client.in_prefix(p, *l)))))
            || self.same_link(client, backend)
    }

    /// True when `a` and `b` are on one connected subnet of the node: the
    /// backend's reply would go straight to the client at L2, bypassing the
    /// dataplane, so such connections must be masqueraded (kube-proxy relies
    /// on br_netfilter for this case; we have no bridge hook).
    #[inline]
    pub fn same_link(&self, a: &Addr, b: &Addr) -> bool {
        self.interfaces
            .iter()
            .any(|i| a.in_prefix(&i.addr, i.prefix_len) && b.in_prefix(&i.addr, i.prefix_len))
    }

    /// The Service a new connection from `client` uses: `svc`, or its
    /// short-circuit for clients in the cluster CIDRs or on a node address.
    #[inline]
    pub fn service_for<'a>(&self, svc: &'a Service, client: &Addr) -> &'a Service {
        match &svc.short_circuit {
            Some(sc)
                if self.local.contains_key(client)
                    || self
                        .masquerade
                        .cluster_cidrs
                        .iter()
                        .any(|(p, l)| client.in_prefix(p, *l)) =>
            {
                sc
            }
            _ => svc,
        }
    }

    /// True when `f` is a recently removed frontend (see [`TableSpec::retired`]).
    #[inline]
    pub fn is_retired(&self, f: &Frontend) -> bool {
        !self.retired.is_empty() && self.retired.contains_key(f)
    }

    /// The Service index for a frontend.
    #[inline]
    pub fn frontend(&self, f: &Frontend) -> Option<u32> {
        if self.frontends.is_empty() {
            return None;
        }
        self.frontends.get(f).copied()
    }

    /// True when `frontend` still exists and still has `backend` among its backends.
    #[inline]
    pub fn backend_valid(&self, frontend: &Frontend, backend: &SockAddr) -> bool {
        self.frontend(frontend)
            .and_then(|i| self.service(i))
            .is_some_and(|s| {
                s.has_backend(backend)
                    || s.short_circuit
                        .as_ref()
                        .is_some_and(|c| c.has_backend(backend))
            })
    }

    /// The (frontend, backend) pairs of `old` that this table no longer
    /// has (a backend gone from its Service, own or short-circuit, or the
    /// whole frontend gone): `Some(empty)` when nothing is gone, `None` when
    /// more than [`MAX_REMOVED`] are. Services shared with `old` (the same
    /// `Arc`, by position first) are not compared further. Control-plane
    /// cost: one pointer compare per unchanged Service.
    pub fn removed_since(&self, old: &[Arc<Service>]) -> Option<Vec<(Frontend, SockAddr)>> {
        let mut removed = Vec::new();
        for (i, o) in old.iter().enumerate() {
            if self.services.get(i).is_some_and(|n| Arc::ptr_eq(n, o)) {
                continue;
            }
            let n = self
                .frontend(&o.frontend)
                .and_then(|j| self.services.get(j as usize));
            if n.is_some_and(|n| Arc::ptr_eq(n, o)) {
                continue;
            }
            let all = o
                .backends
                .iter()
                .chain(o.short_circuit.iter().flat_map(|c| c.backends.iter()));
            for b in all {
                let kept = n.is_some_and(|n| {
                    n.has_backend(b) || n.short_circuit.as_ref().is_some_and(|c| c.has_backend(b))
                });
                if !kept {
                    if removed.len() == MAX_REMOVED {
                        return None;
                    }
                    removed.push((o.frontend, *b));
                }
            }
        }
        Some(removed)
    }

    /// Sets this table's flush epoch from the previous table's (`prev`,
    /// whose Services were `prev_services`): unchanged when nothing is gone
    /// ([`ServiceTable::removed_since`]), else a new epoch (this version)
    /// that remembers what went. Publishers call this before publishing.
    pub fn inherit_flush_epoch(&mut self, prev: &FlushEpoch, prev_services: &[Arc<Service>]) {
        self.epoch = match self.removed_since(prev_services) {
            Some(r) if r.is_empty() => prev.clone(),
            removed => FlushEpoch::new(self.version, prev.current, removed),
        };
    }

    /// Whether a UDP session to `backend` through `frontend` still has its
    /// backend. A session valid at the epoch before this one (`behind`:
    /// the worker knows it was) checks the short list of pairs that epoch
    /// change removed; others look the backend up in its Service
    /// ([`ServiceTable::backend_valid`]).
    #[inline]
    pub fn backend_still_valid(
        &self,
        behind: bool,
        frontend: &Frontend,
        backend: &SockAddr,
    ) -> bool {
        if let (true, Some(r)) = (behind, &self.epoch.removed) {
            return !r.iter().any(|(f, b)| f == frontend && b == backend);
        }
        self.backend_valid(frontend, backend)
    }

    /// The Service at `idx`.
    #[inline]
    pub fn service(&self, idx: u32) -> Option<&Service> {
        self.services.get(idx as usize).map(|s| &**s)
    }

    /// All Services.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The port of a node address, if `a` is one.
    #[inline]
    pub fn local_port(&self, a: &Addr) -> Option<u16> {
        self.local.get(a).copied()
    }

    /// True when `a` is a node address or a Service VIP (we answer ARP/ND for it).
    #[inline]
    pub fn owns(&self, a: &Addr) -> bool {
        self.local.contains_key(a) || self.vips.contains_key(a)
    }

    /// A node address of the same family on `port` (source of ARP/ND/ICMP we originate).
    pub fn port_addr(&self, port: u16, v4: bool) -> Option<Addr> {
        self.local
            .iter()
            .filter(|(a, p)| **p == port && a.is_v4() == v4)
            .map(|(a, _)| *a)
            .min()
    }

    /// Longest-prefix-match route lookup (routes are kept longest first;
    /// each is one masked compare of the 128-bit address).
    #[inline]
    pub fn route(&self, dst: &Addr) -> Option<NextHop> {
        let d = u128::from_be_bytes(dst.0);
        let v4 = dst.is_v4();
        self.lpm
            .iter()
            .find(|&&(net, mask, rv4, _)| rv4 == v4 && d & mask == net)
            .map(|&(.., i)| {
                let r = &self.routes[i as usize];
                NextHop {
                    port: r.port,
                    addr: r.via.unwrap_or(*dst),
                }
            })
    }

    /// Static neighbours.
    pub fn static_neighbors(&self) -> &[StaticNeighbor] {
        &self.neighbors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Addr {
        Addr::from(Ipv4Addr::new(a, b, c, d))
    }

    fn spec() -> TableSpec {
        TableSpec {
            services: vec![ServiceSpec {
                source_ranges: vec![],
                affinity_timeout: None,
                masquerade: false,
                external: false,
                no_backends: NoBackends::Reject,
                short_circuit: vec![],
                algorithm: Default::default(),
                name: "default/web:http".into(),
                frontend: Frontend {
                    addr: SockAddr::new(v4(198, 18, 100, 1), 80),
                    proto: Proto::Tcp,
                },
                backends: (1..=3)
                    .map(|i| SockAddr::new(v4(198, 18, 1, 10 + i), 8080))
                    .collect(),
            }],
            interfaces: vec![
                Interface {
                    port: 0,
                    addr: v4(198, 18, 0, 1),
                    prefix_len: 24,
                },
                Interface {
                    port: 1,
                    addr: v4(198, 18, 1, 1),
                    prefix_len: 24,
                },
            ],
            routes: vec![
                Route {
                    prefix: v4(198, 19, 0, 0),
                    len: 16,
                    port: 1,
                    via: Some(v4(198, 18, 1, 254)),
                },
                Route {
                    prefix: v4(198, 19, 5, 0),
                    len: 24,
                    port: 0,
                    via: Some(v4(198, 18, 0, 254)),
                },
            ],
            neighbors: vec![],
            retired: vec![],
            masquerade: Default::default(),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = ServiceTable::new(spec(), 1);
        assert_eq!(
            t.route(&v4(198, 18, 1, 12)),
            Some(NextHop {
                port: 1,
                addr: v4(198, 18, 1, 12)
            })
        );
        assert_eq!(
            t.route(&v4(198, 19, 7, 1)),
            Some(NextHop {
                port: 1,
                addr: v4(198, 18, 1, 254)
            })
        );
        assert_eq!(
            t.route(&v4(198, 19, 5, 1)),
            Some(NextHop {
                port: 0,
                addr: v4(198, 18, 0, 254)
            })
        );
        assert_eq!(t.route(&v4(203, 0, 113, 1)), None);
    }

    #[test]
    fn built_services_are_shared_not_rebuilt() {
        let mut other = spec().services[0].clone();
        other.frontend.addr = SockAddr::new(v4(198, 18, 100, 2), 80);
        let built = Arc::new(Service::new(other));
        let t = ServiceTable::with_services(spec(), vec![built.clone()], 1);
        assert_eq!(t.services().len(), 2);
        assert!(Arc::ptr_eq(&t.services()[1], &built));
        assert_eq!(t.frontend(&built.frontend), Some(1));
        // A built Service with a frontend already in the spec loses (first wins).
        let dup = Arc::new(Service::new(spec().services[0].clone()));
        let t = ServiceTable::with_services(spec(), vec![dup.clone()], 2);
        assert_eq!(t.services().len(), 1);
        assert!(!Arc::ptr_eq(&t.services()[0], &dup));
    }

    #[test]
    fn frontends_and_picks() {
        let t = ServiceTable::new(spec(), 1);
        let f = Frontend {
            addr: SockAddr::new(v4(198, 18, 100, 1), 80),
            proto: Proto::Tcp,
        };
        let i = t.frontend(&f).unwrap();
        let svc = t.service(i).unwrap();
        let mut seen = std::collections::HashSet::new();
        for h in 0..1000u64 {
            seen.insert(svc.pick(crate::addr::fmix64(h)).unwrap());
        }
        assert_eq!(seen.len(), 3);
        assert!(t
            .frontend(&Frontend {
                proto: Proto::Udp,
                ..f
            })
            .is_none());
        assert!(t.owns(&v4(198, 18, 100, 1)));
        assert!(t.owns(&v4(198, 18, 0, 1)));
        assert!(!t.owns(&v4(198, 18, 0, 2)));
        assert_eq!(t.port_addr(1, true), Some(v4(198, 18, 1, 1)));
    }

    #[test]
    fn flush_epochs_move_on_removals_and_remember_them() {
        let t1 = ServiceTable::new(spec(), 1);
        let f = t1.services()[0].frontend;
        let be = |i: u8| SockAddr::new(v4(198, 18, 1, 10 + i), 8080);
        // Same content, rebuilt: nothing gone, the epoch carries over.
        let mut t2 = ServiceTable::new(spec(), 2);
        t2.inherit_flush_epoch(&t1.epoch, t1.services());
        assert_eq!(t2.epoch, t1.epoch);
        // Backend 1 removed: a new epoch remembering (frontend, backend 1).
        let mut s3 = spec();
        s3.services[0].backends.retain(|b| *b != be(1));
        let mut t3 = ServiceTable::new(s3, 3);
        t3.inherit_flush_epoch(&t2.epoch, t2.services());
        assert_eq!(t3.epoch.current, 3);
        assert_eq!(t3.epoch.previous, 1);
        assert_eq!(t3.epoch.removed, Some(vec![(f, be(1))]));
        assert_eq!(t3.epoch.removed(), Some(&[(f, be(1))][..]));
        // A session one epoch behind checks that list; older ones their
        // Service (the list alone would keep backend 4, never in it).
        assert!(!t3.backend_still_valid(true, &f, &be(1)));
        assert!(t3.backend_still_valid(true, &f, &be(2)));
        assert!(t3.backend_still_valid(true, &f, &be(4)));
        assert!(!t3.backend_still_valid(false, &f, &be(1)));
        assert!(t3.backend_still_valid(false, &f, &be(3)));
        assert!(!t3.backend_still_valid(false, &f, &be(4)));
        // A whole Service gone: every pair of it.
        let mut t4 = ServiceTable::new(TableSpec::default(), 4);
        t4.inherit_flush_epoch(&t3.epoch, t3.services());
        assert_eq!(t4.epoch.removed, Some(vec![(f, be(2)), (f, be(3))]));
        assert!(!t4.backend_still_valid(true, &f, &be(2)));
    }

    #[test]
    fn surely_kept_never_vouches_for_a_removed_backend() {
        let f = spec().services[0].frontend;
        let mut rng = 7u64;
        let mut next = || {
            rng = crate::addr::fmix64(rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
            rng
        };
        let mut random_backend = |v6: bool| {
            let r = next();
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&r.to_le_bytes());
            a[8..].copy_from_slice(&next().to_le_bytes());
            let addr = if v6 { Addr(a) } else { v4(198, 18, a[0], a[1]) };
            SockAddr::new(addr, (r >> 48) as u16)
        };
        let (mut kept, mut others) = (0, 0);
        for round in 0..400usize {
            let n = 1 + round % MAX_REMOVED;
            let removed: Vec<_> = (0..n)
                .map(|i| (f, random_backend((round + i) % 2 == 0)))
                .collect();
            let e = FlushEpoch::new(9, 8, Some(removed.clone()));
            // Never for a removed backend, whatever the frontend.
            for (_, b) in &removed {
                assert!(!e.surely_kept(true, b), "{b:?} was removed");
            }
            // Only for sessions exactly one epoch behind, and only when the
            // change is known.
            let b = random_backend(round % 3 == 0);
            assert!(!e.surely_kept(false, &b));
            assert!(!FlushEpoch::new(9, 8, None).surely_kept(true, &b));
            if n == 1 && !removed.iter().any(|(_, r)| *r == b) {
                others += 1;
                kept += usize::from(e.surely_kept(true, &b));
            }
        }
        // With one removed backend, nearly every other backend is vouched
        // for without a lookup (a 64-bit filter: 1 in 64 collides).
        assert!(kept * 10 >= others * 9, "{kept} of {others}");
        // Through a real publication.
        let be = |i: u8| SockAddr::new(v4(198, 18, 1, 10 + i), 8080);
        let t1 = ServiceTable::new(spec(), 1);
        let mut s2 = spec();
        s2.services[0].backends.retain(|b| *b != be(2));
        let mut t2 = ServiceTable::new(s2, 2);
        t2.inherit_flush_epoch(&t1.epoch, t1.services());
        assert!(!t2.epoch.surely_kept(true, &be(2)));
        for i in [1, 3] {
            assert!(t2.epoch.surely_kept(true, &be(i)) || t2.backend_still_valid(true, &f, &be(i)));
        }
    }

    fn lb_service(algorithm: Algorithm, n: u8) -> Service {
        Service::new(ServiceSpec {
            algorithm,
            backends: (1..=n)
                .map(|i| SockAddr::new(v4(198, 18, 1, i), 8080))
                .collect(),
            ..spec().services.remove(0)
        })
    }

    fn flow(client: u8, sport: u16) -> FlowKey {
        FlowKey {
            src: v4(198, 18, 200, client),
            dst: v4(198, 18, 100, 1),
            sport,
            dport: 80,
            proto: Proto::Tcp,
        }
    }

    fn index(s: &Service, b: SockAddr) -> usize {
        s.backends.iter().position(|x| *x == b).unwrap()
    }

    #[test]
    fn round_robin_rotates_over_all_workers_combined() {
        let s = Arc::new(lb_service(Algorithm::RoundRobin, 5));
        // Two workers picking concurrently share one rotation: together
        // they give every backend exactly the same number of connections.
        let counts: Vec<[u32; 5]> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2u16)
                .map(|w| {
                    let s = s.clone();
                    sc.spawn(move || {
                        let mut rng = 1 + u64::from(w);
                        let mut c = [0u32; 5];
                        for i in 0..5000u16 {
                            let b = s.pick_new(&flow(w as u8, i), &mut rng).unwrap();
                            c[index(&s, b)] += 1;
                        }
                        c
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: Vec<u32> = (0..5).map(|i| counts[0][i] + counts[1][i]).collect();
        assert_eq!(total, vec![2000; 5]);
        // One worker alone cycles in order.
        let s = lb_service(Algorithm::RoundRobin, 3);
        let mut rng = 1;
        let seq: Vec<usize> = (0..6)
            .map(|_| index(&s, s.pick_new(&flow(1, 1000), &mut rng).unwrap()))
            .collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn random_spreads_uniformly_from_every_worker() {
        let s = lb_service(Algorithm::Random, 8);
        // Two workers' generators (seeded as the pipeline does, per worker).
        let mut c = [0u64; 8];
        for mut rng in [0x1234_5678_u64 | 1, 0x9abc_def0_u64 | 1] {
            for i in 0..40_000u32 {
                let b = s.pick_new(&flow(i as u8, i as u16), &mut rng).unwrap();
                c[index(&s, b)] += 1;
            }
        }
        // Chi-square with 7 degrees of freedom: 24.32 is the 0.001 point.
        let e = 80_000.0 / 8.0;
        let chi2: f64 = c.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 24.32, "chi2 {chi2} over {c:?}");
        // The same flow does not always get the same backend (not a hash).
        let mut rng = 7;
        let picks: std::collections::HashSet<_> =
            (0..64).map(|_| s.pick_new(&flow(1, 1), &mut rng)).collect();
        assert!(picks.len() > 4, "{picks:?}");
    }

    #[test]
    fn source_hash_gives_a_client_one_backend_from_every_core() {
        let s = lb_service(Algorithm::SourceHash, 6);
        let mut seen = [0u32; 6];
        for client in 1..=200u8 {
            let mut rng_a = 3;
            let mut rng_b = 5;
            let first = s.pick_new(&flow(client, 1), &mut rng_a).unwrap();
            for sport in [2u16, 999, 40_000, 65_535] {
                assert_eq!(s.pick_new(&flow(client, sport), &mut rng_a), Some(first));
                assert_eq!(s.pick_new(&flow(client, sport), &mut rng_b), Some(first));
            }
            // An independent build of the same Service agrees.
            let again = lb_service(Algorithm::SourceHash, 6);
            assert_eq!(again.pick_new(&flow(client, 7), &mut rng_b), Some(first));
            seen[index(&s, first)] += 1;
        }
        assert!(seen.iter().all(|&n| n >= 15), "{seen:?}");
    }

    #[test]
    fn maglev_is_the_default_and_hashes_the_whole_tuple() {
        assert_eq!(Algorithm::default(), Algorithm::Maglev);
        let s = lb_service(Algorithm::Maglev, 4);
        let mut rng = 1;
        for sport in 1000..1100u16 {
            let k = flow(1, sport);
            assert_eq!(s.pick_new(&k, &mut rng), s.pick(flow_hash(&k)));
        }
        let ports: std::collections::HashSet<_> = (1000..1100u16)
            .map(|p| s.pick_new(&flow(1, p), &mut rng))
            .collect();
        assert_eq!(
            ports.len(),
            4,
            "one client's flows spread over all backends"
        );
        let empty = lb_service(Algorithm::RoundRobin, 0);
        assert_eq!(empty.pick_new(&flow(1, 1), &mut rng), None);
    }

    fn counted(s: &Service, counters: &Arc<crate::lbcount::BackendCounters>) {
        let ids = (0..s.backends.len() as u32).collect();
        assert!(s.set_counters(ServiceCounters {
            counters: counters.clone(),
            ids,
        }));
    }

    #[test]
    fn least_connections_picks_the_least_loaded_and_spreads_ties() {
        let c = Arc::new(crate::lbcount::BackendCounters::new(4));
        let s = lb_service(Algorithm::LeastConnections, 4);
        counted(&s, &c);
        // Backend 0 holds 10 connections, 1 holds 5: new ones go to 2 and 3
        // (ties spread by the random start), until they catch up.
        for _ in 0..10 {
            c.open(0);
        }
        for _ in 0..5 {
            c.open(1);
        }
        let mut rng = 0x5eed;
        let mut got = [0u32; 4];
        for i in 0..10u16 {
            let b = s.pick_new(&flow(1, i), &mut rng).unwrap();
            let j = index(&s, b);
            got[j] += 1;
            c.open(j as u32);
        }
        assert_eq!(got, [0, 0, 5, 5]);
        // All at 5 but backend 0 (10): the next ten fill 1, 2 and 3 evenly-ish,
        // never 0.
        for i in 0..12u16 {
            let b = s.pick_new(&flow(2, i), &mut rng).unwrap();
            let j = index(&s, b);
            assert_ne!(j, 0);
            got[j] += 1;
            c.open(j as u32);
        }
        assert_eq!(
            (c.active(1), c.active(2), c.active(3)),
            (Some(9), Some(9), Some(9))
        );
        // Ended connections are picked up again: backend 0 drains to 0.
        for _ in 0..10 {
            c.close(0);
        }
        let b = s.pick_new(&flow(3, 1), &mut rng).unwrap();
        assert_eq!(index(&s, b), 0);
        // Equal counts: every backend is a first choice from some start.
        let e = lb_service(Algorithm::LeastConnections, 4);
        let fresh = Arc::new(crate::lbcount::BackendCounters::new(4));
        counted(&e, &fresh);
        let firsts: std::collections::HashSet<_> =
            (0..64).map(|i| e.pick_new(&flow(4, i), &mut rng)).collect();
        assert_eq!(firsts.len(), 4);
        // Without counters (no control plane): still a backend.
        let bare = lb_service(Algorithm::LeastConnections, 3);
        assert!(bare.pick_new(&flow(1, 1), &mut rng).is_some());
        assert!(bare.counters().is_none());
        assert_eq!(bare.counter_of(&bare.backends[0]), NO_COUNTER);
    }

    #[test]
    fn counters_are_set_once_with_one_id_per_backend() {
        let c = Arc::new(crate::lbcount::BackendCounters::new(8));
        let s = lb_service(Algorithm::Maglev, 3);
        let wrong = ServiceCounters {
            counters: c.clone(),
            ids: vec![1, 2].into(),
        };
        assert!(!s.set_counters(wrong));
        counted(&s, &c);
        assert!(!s.set_counters(ServiceCounters {
            counters: c.clone(),
            ids: vec![5, 6, 7].into(),
        }));
        assert_eq!(s.counter_of(&s.backends[2]), 2);
        assert_eq!(
            s.counter_of(&SockAddr::new(v4(198, 18, 9, 9), 1)),
            NO_COUNTER
        );
        c.open(1);
        c.open(1);
        c.close(1);
        let rows = s.backend_connections();
        assert_eq!(rows[1], (s.backends[1], 1, 2));
        assert_eq!(rows[0].1, 0);
    }

    #[test]
    fn maglev_services_move_about_one_nth_of_flows_and_agree_across_builds() {
        // Through the Service (the pipeline's pick), not just the Maglev
        // table: 10 backends, 20,000 flows.
        let n = 10u8;
        let all = lb_service(Algorithm::Maglev, n);
        // An independent build with the endpoints listed in another order
        // (another node, another EndpointSlice order) makes the same choices.
        let mut spec = spec().services.remove(0);
        spec.backends = (1..=n)
            .rev()
            .map(|i| SockAddr::new(v4(198, 18, 1, i), 8080))
            .collect();
        let other = Service::new(spec);
        let mut rng = 1;
        let flows: Vec<FlowKey> = (0..20_000u32)
            .map(|i| flow((i % 250) as u8, 1024 + (i / 250) as u16))
            .collect();
        for k in &flows {
            assert_eq!(all.pick_new(k, &mut rng), other.pick_new(k, &mut rng));
        }
        // One backend goes: its own flows move, and few others.
        for gone in [1u8, 5, 10] {
            let gone = SockAddr::new(v4(198, 18, 1, gone), 8080);
            let mut spec = spec_of(&all);
            spec.backends.retain(|b| *b != gone);
            let less = Service::new(spec);
            let (mut moved, mut own) = (0, 0);
            for k in &flows {
                let (a, b) = (all.pick_new(k, &mut rng), less.pick_new(k, &mut rng));
                if a != b {
                    moved += 1;
                }
                if a == Some(gone) {
                    own += 1;
                }
            }
            let frac = moved as f64 / flows.len() as f64;
            assert!(
                (0.07..=0.15).contains(&frac),
                "{moved} of {} flows moved",
                flows.len()
            );
            // Beyond the removed backend's own flows, at most 3 % move.
            assert!(
                (moved - own) * 100 <= 3 * flows.len(),
                "{moved} moved, {own} own"
            );
        }
    }

    fn spec_of(s: &Service) -> ServiceSpec {
        ServiceSpec {
            algorithm: s.algorithm,
            backends: s.backends.clone(),
            ..spec().services.remove(0)
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        assert_eq!(
            Algorithm::from_name("least-connections"),
            Some(Algorithm::LeastConnections)
        );
        assert_eq!(Algorithm::from_name("Maglev"), None);
    }
}
