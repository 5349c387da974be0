//! Per-backend connection counts shared by every worker (issue 8).
//!
//! One node-wide array of counters, each on its own cache line: a session
//! stores the index of its backend's counter (a `u32`, kept next to the
//! session by [`crate::session::SessionTable`]), so ending it needs no
//! search and no table. A worker adds to `opened` when it creates a session
//! and to `closed` when the session ends (expiry, TCP FIN/RST, SCTP
//! SHUTDOWN/ABORT, the stale-UDP flush, a tuple reused by a new connection):
//! one relaxed atomic add each, never per packet. Active connections are
//! `opened - closed`.
//!
//! The control plane hands out the indices ([`CounterRegistry`]), keyed by
//! (frontend, backend): a backend that stays in a rebuilt Service keeps its
//! counter across table swaps; a counter is reused for another backend only
//! once no table names it and no session holds it, and starts again from 0.
use crate::addr::SockAddr;
use crate::table::{Frontend, Service, ServiceTable};
use crossbeam_utils::CachePadded;
use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The counter index of a session or backend without a counter.
pub const NO_COUNTER: u32 = u32::MAX;

/// Default number of counters (backends of all Services of a node).
pub const DEFAULT_COUNTERS: usize = 1 << 16;

#[derive(Default)]
struct Slot {
    opened: AtomicU64,
    closed: AtomicU64,
}

/// The node-wide counter array. See the module docs.
pub struct BackendCounters {
    slots: Box<[CachePadded<Slot>]>,
}

impl core::fmt::Debug for BackendCounters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BackendCounters({})", self.slots.len())
    }
}

impl Default for BackendCounters {
    fn default() -> Self {
        Self::new(0)
    }
}

impl BackendCounters {
    /// `n` counters, all zero (allocated now, never again).
    pub fn new(n: usize) -> Self {
        BackendCounters {
            slots: (0..n.min(NO_COUNTER as usize))
                .map(|_| CachePadded::new(Slot::default()))
                .collect(),
        }
    }

    /// Number of counters.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there is no counter.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A session to counter `id`'s backend was created.
    #[inline]
    pub fn open(&self, id: u32) {
        if let Some(s) = self.slots.get(id as usize) {
            s.opened.fetch_add(1, Relaxed);
        }
    }

    /// A session counted by [`BackendCounters::open`] ended.
    #[inline]
    pub fn close(&self, id: u32) {
        if let Some(s) = self.slots.get(id as usize) {
            s.closed.fetch_add(1, Relaxed);
        }
    }

    /// Active connections of counter `id` (`None`: no such counter).
    #[inline]
    pub fn active(&self, id: u32) -> Option<u64> {
        self.slots.get(id as usize).map(|s| {
            // `closed` first: it can only have grown less than `opened` since.
            let closed = s.closed.load(Relaxed);
            s.opened.load(Relaxed).saturating_sub(closed)
        })
    }

    /// Connections ever counted by counter `id` since it was handed out.
    pub fn total(&self, id: u32) -> Option<u64> {
        self.slots.get(id as usize).map(|s| s.opened.load(Relaxed))
    }

    fn reset(&self, id: u32) {
        if let Some(s) = self.slots.get(id as usize) {
            s.opened.store(0, Relaxed);
            s.closed.store(0, Relaxed);
        }
    }
}

/// A Service's counters: the node-wide array and one index per backend (in
/// the order of [`Service::backends`]).
#[derive(Debug)]
pub struct ServiceCounters {
    /// The node-wide array.
    pub counters: Arc<BackendCounters>,
    /// Counter index of each backend ([`NO_COUNTER`]: none).
    pub ids: Box<[u32]>,
}

type Key = (Frontend, SockAddr);

/// Hands out counter indices (control plane; see the module docs).
#[derive(Debug)]
pub struct CounterRegistry {
    counters: Arc<BackendCounters>,
    /// Counter and number of built Services naming it, by (frontend, backend).
    live: HashMap<Key, (u32, u32)>,
    /// Counters no published Service names any more, whose sessions may
    /// still be open (or whose table a worker may still read).
    draining: HashMap<Key, u32>,
    free: Vec<u32>,
    /// Backends left without a counter because all were in use.
    pub exhausted: u64,
}

impl CounterRegistry {
    /// A registry over `counters`, all free.
    pub fn new(counters: Arc<BackendCounters>) -> Self {
        let free = (0..counters.len() as u32).rev().collect();
        CounterRegistry {
            counters,
            live: HashMap::new(),
            draining: HashMap::new(),
            free,
            exhausted: 0,
        }
    }

    /// The node-wide array (workers' session tables count into it).
    pub fn counters(&self) -> &Arc<BackendCounters> {
        &self.counters
    }

    /// Counters named by published Services, and draining ones.
    pub fn in_use(&self) -> (usize, usize) {
        (self.live.len(), self.draining.len())
    }

    /// Gives every Service of `new` that has none its counters, and
    /// releases those of the Services of the previous table (`prev`) that
    /// `new` does not share. Cost: the changed Services' backends plus one
    /// index lookup per previous Service. `reclaim`: no worker can still
    /// read a table older than `prev` (its grace period completed), so
    /// draining counters without sessions may be reused. Call before
    /// publishing `new`. (A Service that skipped a table keeps the indices
    /// it was given; if they were reused meanwhile, its counts mix with
    /// another backend's until it is rebuilt — the Model includes every
    /// built Service in every table, so this needs a frontend clash.)
    pub fn update(&mut self, new: &ServiceTable, prev: &[Arc<Service>], reclaim: bool) {
        if reclaim {
            let counters = &self.counters;
            let free = &mut self.free;
            self.draining.retain(|_, id| {
                if counters.active(*id) == Some(0) {
                    counters.reset(*id);
                    free.push(*id);
                    false
                } else {
                    true
                }
            });
        }
        let was: hashbrown::HashSet<*const Service> = prev.iter().map(Arc::as_ptr).collect();
        for n in new.services() {
            let fresh = !was.contains(&Arc::as_ptr(n));
            for s in core::iter::once(&**n).chain(n.short_circuit.as_deref()) {
                if s.counters().is_none() {
                    let ids = s
                        .backends
                        .iter()
                        .map(|b| self.acquire((s.frontend, *b)))
                        .collect();
                    s.set_counters(ServiceCounters {
                        counters: self.counters.clone(),
                        ids,
                    });
                } else if fresh {
                    // Built and counted for an earlier table, absent from
                    // the last one, back now: it names its counters again.
                    for b in &s.backends {
                        self.acquire((s.frontend, *b));
                    }
                }
            }
        }
        for o in prev {
            let kept = new
                .frontend(&o.frontend)
                .and_then(|i| new.services().get(i as usize))
                .is_some_and(|n| Arc::ptr_eq(n, o));
            if kept {
                continue;
            }
            for s in core::iter::once(&**o).chain(o.short_circuit.as_deref()) {
                for b in &s.backends {
                    self.release((s.frontend, *b));
                }
            }
        }
    }

    fn acquire(&mut self, k: Key) -> u32 {
        if let Some((id, refs)) = self.live.get_mut(&k) {
            *refs += 1;
            return *id;
        }
        // Back before its sessions drained: the same counter, still counting.
        let id = match self.draining.remove(&k) {
            Some(id) => id,
            None => match self.free.pop() {
                Some(id) => id,
                None => {
                    self.exhausted += 1;
                    return NO_COUNTER;
                }
            },
        };
        self.live.insert(k, (id, 1));
        id
    }

    fn release(&mut self, k: Key) {
        if let Some((id, refs)) = self.live.get_mut(&k) {
            *refs -= 1;
            if *refs == 0 {
                let id = *id;
                self.live.remove(&k);
                self.draining.insert(k, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Addr, Proto};
    use crate::table::{Algorithm, ServiceSpec, TableSpec};

    fn be(i: u8) -> SockAddr {
        SockAddr::new(Addr::v4([198, 18, 1, i]), 8080)
    }

    fn svc(vip: u8, backends: &[u8]) -> ServiceSpec {
        ServiceSpec {
            name: format!("default/s{vip}:http"),
            frontend: Frontend {
                addr: SockAddr::new(Addr::v4([198, 18, 100, vip]), 80),
                proto: Proto::Tcp,
            },
            backends: backends.iter().map(|&i| be(i)).collect(),
            no_backends: Default::default(),
            masquerade: false,
            external: false,
            affinity_timeout: None,
            source_ranges: vec![],
            short_circuit: vec![],
            algorithm: Algorithm::LeastConnections,
        }
    }

    struct Node {
        reg: CounterRegistry,
        table: ServiceTable,
        version: u64,
    }

    impl Node {
        fn new(n: usize) -> Self {
            Node {
                reg: CounterRegistry::new(Arc::new(BackendCounters::new(n))),
                table: ServiceTable::default(),
                version: 0,
            }
        }
        /// Publishes the config Services `fresh` plus the built `kept`.
        fn publish(&mut self, fresh: Vec<ServiceSpec>, kept: Vec<Arc<Service>>) {
            self.version += 1;
            let t = ServiceTable::with_services(
                TableSpec {
                    services: fresh,
                    ..Default::default()
                },
                kept,
                self.version,
            );
            let prev = self.table.services().to_vec();
            self.reg.update(&t, &prev, true);
            self.table = t;
        }
        fn id(&self, vip: u8, b: u8) -> u32 {
            let s = self.svc(vip);
            let i = s.backends.iter().position(|x| *x == be(b)).unwrap();
            s.counters().unwrap().ids[i]
        }
        fn svc(&self, vip: u8) -> &Service {
            self.table
                .services()
                .iter()
                .find(|s| s.frontend.addr.addr == Addr::v4([198, 18, 100, vip]))
                .unwrap()
        }
    }

    #[test]
    fn counters_survive_rebuilds_for_kept_backends_and_reset_for_new_ones() {
        let mut n = Node::new(8);
        n.publish(vec![svc(1, &[1, 2, 3])], vec![]);
        let c = n.reg.counters().clone();
        let (a1, a2, a3) = (n.id(1, 1), n.id(1, 2), n.id(1, 3));
        for _ in 0..5 {
            c.open(a1);
        }
        c.open(a2);
        c.open(a3);
        // Rebuilt (a new Service object): backend 3 gone, 4 new.
        n.publish(vec![svc(1, &[1, 2, 4])], vec![]);
        assert_eq!(n.id(1, 1), a1);
        assert_eq!(n.id(1, 2), a2);
        assert_eq!(c.active(n.id(1, 1)), Some(5));
        assert_eq!(c.active(n.id(1, 2)), Some(1));
        let a4 = n.id(1, 4);
        assert!(![a1, a2, a3].contains(&a4));
        assert_eq!((c.active(a4), c.total(a4)), (Some(0), Some(0)));
        // Backend 3's counter drains while its session lives, then is reused
        // for the next new backend, from zero.
        assert_eq!(n.reg.in_use(), (3, 1));
        n.publish(vec![svc(1, &[1, 2, 4])], vec![]);
        assert_eq!(n.reg.in_use(), (3, 1), "a session still holds it");
        c.close(a3);
        n.publish(vec![svc(1, &[1, 2, 4])], vec![]);
        assert_eq!(n.reg.in_use(), (3, 0));
        n.publish(vec![svc(1, &[1, 2, 4, 5])], vec![]);
        assert_eq!(n.id(1, 5), a3);
        assert_eq!((c.active(a3), c.total(a3)), (Some(0), Some(0)));
    }

    #[test]
    fn shared_services_keep_their_counters_and_removed_services_release_them() {
        let mut n = Node::new(8);
        let built = Arc::new(Service::new(svc(2, &[1, 2])));
        n.publish(vec![svc(1, &[1])], vec![built.clone()]);
        let ids = built.counters().unwrap().ids.to_vec();
        // The same frontend/backend pair in two Services: one counter each
        // per frontend (backend 1 of VIP 1 and of VIP 2 differ).
        assert_ne!(n.id(1, 1), ids[0]);
        n.publish(vec![svc(1, &[1])], vec![built.clone()]);
        assert_eq!(built.counters().unwrap().ids.to_vec(), ids);
        assert_eq!(n.reg.in_use(), (3, 0));
        // Service 2 removed: its counters drain, then free.
        n.publish(vec![svc(1, &[1])], vec![]);
        assert_eq!(n.reg.in_use(), (1, 2));
        n.publish(vec![svc(1, &[1])], vec![]);
        assert_eq!(n.reg.in_use(), (1, 0));
        // Back again with new Service objects: new counters from zero.
        n.publish(vec![svc(1, &[1]), svc(2, &[1, 2])], vec![]);
        assert_eq!(n.reg.in_use(), (3, 0));
    }

    #[test]
    fn a_built_service_back_after_skipping_a_table_names_its_counters_again() {
        let mut n = Node::new(8);
        let built = Arc::new(Service::new(svc(2, &[1])));
        n.publish(vec![], vec![built.clone()]);
        n.publish(vec![], vec![]);
        n.publish(vec![], vec![built.clone()]);
        assert_eq!(n.reg.in_use(), (1, 0));
        // Another Service with the same pair, then the first one leaves:
        // the counter stays live for the other.
        let twin = Arc::new(Service::new(svc(2, &[1])));
        n.publish(vec![], vec![built.clone()]);
        n.publish(vec![], vec![twin.clone()]);
        assert_eq!(n.reg.in_use(), (1, 0));
        assert_eq!(
            twin.counters().unwrap().ids[0],
            built.counters().unwrap().ids[0]
        );
    }

    #[test]
    fn a_backend_back_before_its_sessions_drained_keeps_counting() {
        let mut n = Node::new(8);
        n.publish(vec![svc(1, &[1, 2])], vec![]);
        let c = n.reg.counters().clone();
        let a2 = n.id(1, 2);
        c.open(a2);
        n.publish(vec![svc(1, &[1])], vec![]);
        n.publish(vec![svc(1, &[1, 2])], vec![]);
        assert_eq!(n.id(1, 2), a2);
        assert_eq!(c.active(a2), Some(1));
    }

    #[test]
    fn without_reclaim_draining_counters_are_not_reused() {
        let mut n = Node::new(8);
        n.publish(vec![svc(1, &[1])], vec![]);
        let a1 = n.id(1, 1);
        let t = ServiceTable::with_services(TableSpec::default(), vec![], 9);
        let prev = n.table.services().to_vec();
        n.reg.update(&t, &prev, false);
        n.table = t;
        let t = ServiceTable::with_services(
            TableSpec {
                services: vec![svc(3, &[7])],
                ..Default::default()
            },
            vec![],
            10,
        );
        let prev = n.table.services().to_vec();
        n.reg.update(&t, &prev, false);
        n.table = t;
        assert_ne!(n.id(3, 7), a1, "reused while a worker may hold it");
    }

    #[test]
    fn exhausted_counters_leave_backends_uncounted() {
        let mut n = Node::new(2);
        n.publish(vec![svc(1, &[1, 2, 3])], vec![]);
        assert_eq!(n.reg.exhausted, 1);
        let c = n.reg.counters().clone();
        assert_eq!(n.id(1, 3), NO_COUNTER);
        assert_eq!(c.active(NO_COUNTER), None);
        c.open(NO_COUNTER);
        c.close(NO_COUNTER);
    }

    #[test]
    fn short_circuit_services_get_counters_too() {
        let mut n = Node::new(8);
        let mut s = svc(1, &[1]);
        s.short_circuit = vec![be(1), be(2)];
        n.publish(vec![s], vec![]);
        let sc = n.svc(1).short_circuit.as_ref().unwrap();
        let ids = &sc.counters().unwrap().ids;
        // Backend 1 through the same frontend: the same counter.
        assert_eq!(ids[0], n.id(1, 1));
        assert_ne!(ids[1], NO_COUNTER);
        assert_eq!(n.reg.in_use(), (2, 0));
        n.publish(vec![], vec![]);
        assert_eq!(n.reg.in_use(), (0, 2));
        n.publish(vec![], vec![]);
        assert_eq!(n.reg.in_use(), (0, 0));
    }
}
