//! Watching the cluster: Services, EndpointSlices and this node's Node, as
//! kube-proxy does, turned into dataplane table entries.
//!
//! [`watch`] runs one `kube` watcher per kind (list + watch, resumed from the
//! last resource version after a cut stream or an outage, exponential
//! backoff on errors) and sends every event to one channel. When the API
//! server answers that the resource version expired ("410 Gone", e.g. etcd
//! was compacted while the proxy was disconnected), the watch relists at
//! once, without a backoff, and the expiry is counted per resource
//! ([`ExpiredCounts`]). [`Model`] is the pure part: it keeps the objects, tracks which
//! Services changed (keyed by Service, so a change to one Service or one of
//! its EndpointSlices rebuilds that Service's entries only — DESIGN.md
//! decision 3) and answers whether both kinds have synced (nothing from the
//! cluster is programmed before that).
//!
//! A relist (the watcher's `Init` … `InitDone`) replaces the whole set of
//! objects of that kind, so objects deleted while the watch was down are
//! dropped and everything that changed is marked for a rebuild.
use crate::k8s::{self, NodeInfo, LABEL_SERVICE_NAME};
use crate::publisher::ControlMetrics;
use dataplane::table::Service as Built;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The EndpointSlice annotation the EndpointSlice controller sets to the time
/// of the change that caused the slice's update (kube-proxy's
/// network-programming latency starts there).
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Label of the Node giving its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The cluster autoscaler's taint on a node it is about to remove.
pub const TAINT_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

/// `namespace/name` of a Service (the key of the change tracking).
pub type Key = String;

/// One event from one of the watches. (Events are moved once, through a
/// channel; boxing the large variants would only add an allocation.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// A Service event.
    Service(Event<Service>),
    /// An EndpointSlice event.
    Slice(Event<EndpointSlice>),
    /// An event of this node's Node object.
    Node(Event<Node>),
    /// A watch failed (it retries with backoff); the message says why.
    Error(&'static str, String),
}

/// A `healthCheckNodePort` to serve: kube-proxy answers it with the number of
/// ready endpoints of the Service on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Ready endpoints on this node.
    pub local_endpoints: usize,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The Service an EndpointSlice belongs to (`kubernetes.io/service-name`).
fn slice_owner(s: &EndpointSlice) -> Option<Key> {
    let name = s.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(format!(
        "{}/{}",
        s.metadata.namespace.as_deref().unwrap_or(""),
        name
    ))
}

fn trigger_time(s: &EndpointSlice) -> Option<SystemTime> {
    let v = s
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_TRIGGER_TIME)?;
    let t: jiff::Timestamp = v.parse().ok()?;
    Some(SystemTime::from(t))
}

/// Drops what the proxy never reads and the API server sends with every
/// object: `managedFields` (often the largest part of an object) and
/// `kubectl`'s last-applied copy. Also makes objects that differ only there
/// compare equal (no rebuild).
fn trim(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    meta.resource_version = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The cluster as this node sees it, and which Services must be rebuilt.
#[derive(Debug, Default)]
pub struct Model {
    node: NodeInfo,
    node_name_set: bool,
    node_eligible: bool,
    services: HashMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Service key → keys of its slices.
    by_service: HashMap<Key, BTreeSet<Key>>,
    service_relist: Option<HashMap<Key, Service>>,
    slice_relist: Option<HashMap<Key, EndpointSlice>>,
    services_synced: bool,
    slices_synced: bool,
    dirty: HashSet<Key>,
    /// Built entries (Maglev tables included), by Service, ordered for
    /// deterministic tables; shared with the published tables.
    entries: BTreeMap<Key, Vec<Arc<Built>>>,
    health: BTreeMap<u16, HealthCheck>,
    /// Service key → its health-check port in `health`.
    health_port: HashMap<Key, u16>,
    /// When the model was made: older trigger times are not this proxy's
    /// programming latency (kube-proxy's tracker start time).
    started: Option<SystemTime>,
    /// Oldest not yet programmed EndpointSlice change per Service.
    pending_triggers: HashMap<Key, SystemTime>,
    /// This node's pod CIDRs (`spec.podCIDRs` of its Node object).
    pod_cidrs: Vec<(dataplane::addr::Addr, u8)>,
    /// `pod_cidrs` changed since the last sync (the table's routes follow).
    pod_cidrs_changed: bool,
    /// Objects that could not be translated (logged and skipped), total.
    pub translate_errors: u64,
    /// Service rebuilds that met an annotation value they could not use
    /// (logged; the default applied).
    pub annotation_errors: u64,
}

/// What a [`Model::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Services rebuilt.
    pub rebuilt: usize,
    /// Services whose objects could not be translated (their last good
    /// entries, if any, stay).
    pub errors: usize,
    /// Trigger times of the EndpointSlice changes this sync programs.
    pub triggers: Vec<SystemTime>,
}

impl Model {
    /// An empty model for the node `node` (its `name` selects node-local
    /// endpoints; `node_addresses` are where NodePorts are served).
    pub fn new(node: NodeInfo) -> Self {
        Model {
            node_name_set: !node.name.is_empty(),
            node,
            node_eligible: true,
            started: Some(SystemTime::now()),
            ..Default::default()
        }
    }

    /// True once Services and EndpointSlices have both been listed.
    pub fn synced(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    /// True when some Service must be rebuilt.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.pod_cidrs_changed
    }

    /// This node's pod CIDRs, from its Node object's `spec.podCIDRs` (else
    /// `spec.podCIDR`): with an exception port they are routed onto it.
    pub fn pod_cidrs(&self) -> &[(dataplane::addr::Addr, u8)] {
        &self.pod_cidrs
    }

    /// False when the node is being deleted or the cluster autoscaler is
    /// about to remove it (kube-proxy's `nodeEligible`).
    pub fn node_eligible(&self) -> bool {
        self.node_eligible
    }

    /// Applies one event.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Service(ev) => self.apply_service(ev.modify(|s| trim(&mut s.metadata))),
            Change::Slice(ev) => self.apply_slice(ev.modify(|s| trim(&mut s.metadata))),
            Change::Node(ev) => self.apply_node(ev),
            Change::Error(..) => {}
        }
    }

    fn apply_service(&mut self, ev: Event<Service>) {
        match ev {
            Event::Init => self.service_relist = Some(HashMap::new()),
            Event::InitApply(s) => {
                let k = key_of(&s.metadata);
                self.service_relist
                    .get_or_insert_with(HashMap::new)
                    .insert(k, s);
            }
            Event::InitDone => {
                let new = self.service_relist.take().unwrap_or_default();
                for (k, old) in &self.services {
                    if new.get(k) != Some(old) {
                        self.dirty.insert(k.clone());
                    }
                }
                for k in new.keys() {
                    if !self.services.contains_key(k) {
                        self.dirty.insert(k.clone());
                    }
                }
                self.services = new;
                self.services_synced = true;
            }
            Event::Apply(s) => {
                let k = key_of(&s.metadata);
                if self.services.get(&k) != Some(&s) {
                    self.services.insert(k.clone(), s);
                    self.dirty.insert(k);
                }
            }
            Event::Delete(s) => {
                let k = key_of(&s.metadata);
                self.services.remove(&k);
                self.dirty.insert(k);
            }
        }
    }

    fn note_trigger(&mut self, owner: &Key, s: &EndpointSlice) {
        if let Some(t) = trigger_time(s).filter(|t| self.started.is_none_or(|s| *t >= s)) {
            let e = self.pending_triggers.entry(owner.clone()).or_insert(t);
            if t < *e {
                *e = t;
            }
        }
    }

    fn put_slice(&mut self, k: Key, s: EndpointSlice) {
        if let Some(old) = self.slices.get(&k) {
            if *old == s {
                return;
            }
            if let Some(o) = slice_owner(old) {
                self.unlink(&o, &k);
            }
        }
        if let Some(o) = slice_owner(&s) {
            self.note_trigger(&o, &s);
            self.by_service
                .entry(o.clone())
                .or_default()
                .insert(k.clone());
            self.dirty.insert(o);
        }
        self.slices.insert(k, s);
    }

    fn unlink(&mut self, owner: &Key, slice: &Key) {
        if let Some(set) = self.by_service.get_mut(owner) {
            set.remove(slice);
            if set.is_empty() {
                self.by_service.remove(owner);
            }
        }
        self.dirty.insert(owner.clone());
    }

    fn remove_slice(&mut self, k: &Key) {
        if let Some(old) = self.slices.remove(k) {
            if let Some(o) = slice_owner(&old) {
                self.unlink(&o, k);
            }
        }
    }

    fn apply_slice(&mut self, ev: Event<EndpointSlice>) {
        match ev {
            Event::Init => self.slice_relist = Some(HashMap::new()),
            Event::InitApply(s) => {
                let k = key_of(&s.metadata);
                self.slice_relist
                    .get_or_insert_with(HashMap::new)
                    .insert(k, s);
            }
            Event::InitDone => {
                let new = self.slice_relist.take().unwrap_or_default();
                let gone: Vec<Key> = self
                    .slices
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.remove_slice(&k);
                }
                for (k, s) in new {
                    self.put_slice(k, s);
                }
                self.slices_synced = true;
            }
            Event::Apply(s) => {
                let k = key_of(&s.metadata);
                self.put_slice(k, s);
            }
            Event::Delete(s) => {
                let k = key_of(&s.metadata);
                self.remove_slice(&k);
            }
        }
    }

    fn apply_node(&mut self, ev: Event<Node>) {
        let node = match ev {
            Event::Apply(n) | Event::InitApply(n) => n,
            Event::Delete(_) => {
                self.node_eligible = false;
                return;
            }
            Event::Init | Event::InitDone => return,
        };
        if self.node_name_set && node.metadata.name.as_deref() != Some(self.node.name.as_str()) {
            return;
        }
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_ZONE))
            .filter(|z| !z.is_empty())
            .cloned();
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == TAINT_TO_BE_DELETED));
        self.node_eligible = node.metadata.deletion_timestamp.is_none() && !tainted;
        let spec = node.spec.as_ref();
        let listed = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|l| !l.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        let mut pod_cidrs = Vec::new();
        for (i, c) in listed.iter().enumerate() {
            match crate::config::parse_prefix(c, &format!("spec.podCIDRs[{i}]")) {
                Ok(p) => pod_cidrs.push(p),
                Err(e) => {
                    self.translate_errors += 1;
                    tracing::warn!(node = %self.node.name, "Node {e}: skipped");
                }
            }
        }
        if pod_cidrs != self.pod_cidrs {
            tracing::info!(node = %self.node.name, ?listed, "pod CIDRs of this node");
            self.pod_cidrs = pod_cidrs;
            self.pod_cidrs_changed = true;
        }
        if zone != self.node.zone {
            // Zone hints of every Service may now select other endpoints.
            self.node.zone = zone;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    /// Sets the addresses NodePorts are served on; a change rebuilds every
    /// Service.
    pub fn set_node_addresses(&mut self, a: Vec<std::net::IpAddr>) {
        if a != self.node.node_addresses {
            self.node.node_addresses = a;
            self.mark_all();
        }
    }

    /// Sets the node-wide load-balancing algorithm; a change rebuilds every
    /// Service.
    pub fn set_algorithm(&mut self, a: dataplane::table::Algorithm) {
        if a != self.node.algorithm {
            self.node.algorithm = a;
            self.mark_all();
        }
    }

    /// Marks every Service for a rebuild (periodic `syncPeriod` resync, or
    /// after a failed publish).
    pub fn mark_all(&mut self) {
        self.dirty.extend(self.services.keys().cloned());
        self.dirty.extend(self.entries.keys().cloned());
    }

    /// Rebuilds the entries of every changed Service.
    pub fn sync(&mut self) -> SyncReport {
        let mut r = SyncReport::default();
        self.pod_cidrs_changed = false;
        let dirty: Vec<Key> = self.dirty.drain().collect();
        for k in dirty {
            r.rebuilt += 1;
            if let Some(t) = self.pending_triggers.remove(&k) {
                r.triggers.push(t);
            }
            let Some(svc) = self.services.get(&k) else {
                self.entries.remove(&k);
                if let Some(p) = self.health_port.remove(&k) {
                    self.health.remove(&p);
                }
                continue;
            };
            let slices: Vec<EndpointSlice> = self
                .by_service
                .get(&k)
                .into_iter()
                .flatten()
                .filter_map(|s| self.slices.get(s).cloned())
                .collect();
            if let Err(v) = k8s::annotated_algorithm(svc) {
                self.annotation_errors += 1;
                tracing::warn!(
                    "{k}: annotation {}: {v:?} is not a load-balancing algorithm: using {}",
                    k8s::ANNOTATION_LOAD_BALANCING,
                    self.node.algorithm.name()
                );
            }
            match k8s::service_specs(svc, &slices, &self.node) {
                Ok(v) => {
                    // The health check follows the new translation; on an
                    // error both keep their last good state.
                    let hc = health_check(svc, &slices, &self.node);
                    if let Some(p) = self.health_port.remove(&k) {
                        self.health.remove(&p);
                    }
                    if let Some((p, h)) = hc {
                        self.health.insert(p, h);
                        self.health_port.insert(k.clone(), p);
                    }
                    if v.is_empty() {
                        self.entries.remove(&k);
                    } else {
                        let built = v.into_iter().map(|s| Arc::new(Built::new(s))).collect();
                        self.entries.insert(k.clone(), built);
                    }
                }
                Err(e) => {
                    r.errors += 1;
                    self.translate_errors += 1;
                    tracing::warn!("skipping {k}: {e} (its last good entries, if any, stay)");
                }
            }
        }
        r
    }

    /// Every built entry, Services in key order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Built>> {
        self.entries.values().flatten()
    }

    /// Number of built entries.
    pub fn entry_count(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    /// The `healthCheckNodePort`s to serve, by port.
    pub fn health_checks(&self) -> &BTreeMap<u16, HealthCheck> {
        &self.health
    }
}

/// The `healthCheckNodePort` of an `externalTrafficPolicy: Local`
/// LoadBalancer Service, with its node-local ready endpoint count.
fn health_check(
    svc: &Service,
    slices: &[EndpointSlice],
    node: &NodeInfo,
) -> Option<(u16, HealthCheck)> {
    let spec = svc.spec.as_ref()?;
    if spec.external_traffic_policy.as_deref() != Some("Local") {
        return None;
    }
    let port = u16::try_from(spec.health_check_node_port?)
        .ok()
        .filter(|p| *p != 0)?;
    let mut local = HashSet::new();
    for s in slices {
        for ep in s.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready && ep.node_name.as_deref() == Some(node.name.as_str()) {
                if let Some(a) = ep.addresses.first() {
                    local.insert(a.clone());
                }
            }
        }
    }
    Some((
        port,
        HealthCheck {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            local_endpoints: local.len(),
        },
    ))
}

/// Reconnect backoff of the watches: 200 ms doubling to 5 s (client-go uses
/// 800 ms to 30 s; the dataplane keeps forwarding meanwhile, and a quick
/// reconnect shortens the time on a stale table). Not used after an expired
/// resource version: that relists at once.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff::new(Duration::from_millis(200), Duration::from_secs(5))
    }
}

impl WatchBackoff {
    /// `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        WatchBackoff {
            first,
            max,
            next: first,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// The watched resources (the `resource` label of the watch metrics).
pub const RESOURCES: [&str; 3] = ["services", "endpointslices", "nodes"];

/// Expired resource versions ("410 Gone") per watched resource.
#[derive(Debug, Default)]
pub struct ExpiredCounts([AtomicU64; RESOURCES.len()]);

impl ExpiredCounts {
    fn slot(&self, resource: &str) -> Option<&AtomicU64> {
        let i = RESOURCES.iter().position(|r| *r == resource)?;
        self.0.get(i)
    }

    /// Counts one expiry of `resource` (one of [`RESOURCES`]).
    pub fn inc(&self, resource: &str) {
        if let Some(c) = self.slot(resource) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Expiries of `resource` so far.
    pub fn get(&self, resource: &str) -> u64 {
        self.slot(resource).map_or(0, |c| c.load(Relaxed))
    }

    /// `(resource, expiries)` for every watched resource.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RESOURCES.iter().map(|r| (*r, self.get(r)))
    }
}

/// True when the API server says the resource version we asked for is gone
/// (HTTP 410, reason `Expired` or `Gone`): in a watch event, or as the answer
/// to a watch or list request (an expired `continue` token of a paged list).
pub fn expired(e: &watcher::Error) -> bool {
    let gone =
        |s: &kube::core::Status| s.code == 410 || s.reason == "Expired" || s.reason == "Gone";
    match e {
        watcher::Error::WatchError(s) => gone(s),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => gone(s),
        _ => false,
    }
}

/// Starts the three watches; their events arrive on the returned channel.
/// `node` is this node's name (its Node object is watched by field selector).
/// Expired resource versions are counted in `metrics`. The tasks end when
/// the receiver is dropped.
pub fn watch(client: Client, node: &str, metrics: Arc<ControlMetrics>) -> mpsc::Receiver<Change> {
    watch_with(client, node, metrics, WatchBackoff::default())
}

/// [`watch`] with the given error backoff.
pub fn watch_with(
    client: Client,
    node: &str,
    metrics: Arc<ControlMetrics>,
    backoff: WatchBackoff,
) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel(4096);
    // kube-proxy's selectors: Services not owned by another proxy and not
    // headless; EndpointSlices of those (the Model matches them by label).
    let svc_cfg = watcher::Config::default().labels(&format!(
        "!{},!{}",
        k8s::LABEL_SERVICE_PROXY_NAME,
        k8s::LABEL_HEADLESS
    ));
    let slice_cfg = watcher::Config::default().labels(&format!("!{}", k8s::LABEL_HEADLESS));
    let w = Watch {
        tx,
        metrics,
        backoff,
    };
    let api = Api::<Service>::all(client.clone());
    tokio::spawn(w.clone().run(
        "services",
        move || watcher::watcher(api.clone(), svc_cfg.clone()),
        Change::Service,
    ));
    let api = Api::<EndpointSlice>::all(client.clone());
    tokio::spawn(w.clone().run(
        "endpointslices",
        move || watcher::watcher(api.clone(), slice_cfg.clone()),
        Change::Slice,
    ));
    if !node.is_empty() {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
        let api = Api::<Node>::all(client);
        tokio::spawn(w.run(
            "nodes",
            move || watcher::watcher(api.clone(), cfg.clone()),
            Change::Node,
        ));
    }
    rx
}

/// What every watch task shares.
#[derive(Clone)]
struct Watch {
    tx: mpsc::Sender<Change>,
    metrics: Arc<ControlMetrics>,
    backoff: WatchBackoff,
}

impl Watch {
    /// Forwards the events of the watcher `make` builds, until the receiver
    /// is gone.
    ///
    /// Errors are forwarded and retried after a backoff (kube-runtime's
    /// watcher resumes from the last resource version, or relists when it
    /// has to). An expired resource version is different: waiting cannot
    /// help, so a fresh watcher — which starts with a list, `Init` …
    /// `InitDone`, replacing the model's objects of this kind — starts at
    /// once. (kube-runtime 5 restarts with a list by itself after a 410 in
    /// a watch event, but retries the same resource version after a 410
    /// answer to the watch request; a fresh watcher covers both.)
    async fn run<K, S>(
        mut self,
        what: &'static str,
        make: impl Fn() -> S,
        wrap: fn(Event<K>) -> Change,
    ) where
        S: futures::Stream<Item = watcher::Result<Event<K>>>,
    {
        // Why the next list (an `Init` after the first) happens.
        let mut reason: Option<String> = None;
        let mut listed = false;
        let mut objects = 0usize;
        // Expiries since the last complete list: the first two relist at
        // once (a paged relist can expire once when etcd compacts meanwhile);
        // from the third (the list itself keeps expiring) the relist waits
        // for the backoff instead of spinning on the API server.
        let mut expired_unlisted = 0u32;
        loop {
            let stream = make();
            let mut stream = std::pin::pin!(stream);
            loop {
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    () = self.tx.closed() => return,
                };
                let change = match ev {
                    // A watcher never ends; should one, start another
                    // (after a backoff: it might end at once again).
                    None => {
                        let d = self.backoff.next().unwrap_or_default();
                        tokio::select! {
                            () = tokio::time::sleep(d) => break,
                            () = self.tx.closed() => return,
                        }
                    }
                    Some(Ok(ev)) => {
                        self.backoff.reset();
                        match &ev {
                            Event::Init => objects = 0,
                            Event::InitApply(_) => objects += 1,
                            Event::InitDone => {
                                expired_unlisted = 0;
                                if listed {
                                    let why = reason.take();
                                    let why = why.as_deref().unwrap_or("watch restarted");
                                    tracing::info!(
                                        resource = what,
                                        objects,
                                        reason = why,
                                        "relisted: state replaced"
                                    );
                                }
                                listed = true;
                            }
                            Event::Apply(_) | Event::Delete(_) => {}
                        }
                        wrap(ev)
                    }
                    Some(Err(e)) if expired(&e) => {
                        self.metrics.watch_expired.inc(what);
                        tracing::info!(resource = what, reason = %e, "resource version expired: relisting now");
                        reason = Some(format!("resource version expired: {e}"));
                        if expired_unlisted >= 2 {
                            let d = self.backoff.next().unwrap_or_default();
                            tokio::select! {
                                () = tokio::time::sleep(d) => {}
                                () = self.tx.closed() => return,
                            }
                        } else {
                            self.backoff.reset();
                        }
                        expired_unlisted += 1;
                        break;
                    }
                    Some(Err(e)) => {
                        reason = Some(e.to_string());
                        if self
                            .tx
                            .send(Change::Error(what, e.to_string()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        let d = self.backoff.next().unwrap_or_default();
                        tokio::select! {
                            () = tokio::time::sleep(d) => {}
                            () = self.tx.closed() => return,
                        }
                        continue;
                    }
                };
                if self.tx.send(change).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
