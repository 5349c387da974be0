//! The poll-mode worker loop and the code that wires ports, rings and
//! workers together.
//!
//! One worker per lcore. Worker `i` owns rx queue `i` and tx queue `i` of
//! every port, a single-producer/single-consumer hand-off ring to every other
//! worker, its connection table and its counters. Per loop it: applies
//! neighbours learned by peers, reads the current service table once, polls
//! its rx queues and inbound hand-off rings, sends solicitations, announces an
//! RCU quiescent state, flushes tx and hand-off buffers, and expires a
//! bounded number of sessions. With a large session table a received burst
//! is handled one loop later, after its lines were prefetched ([`Staged`]).
//! Nothing here allocates, locks, logs or makes a syscall, except the
//! optional idle sleep.
use crate::addr::Addr;
use crate::dpdk::rcu::{Rcu, Reader};
use crate::dpdk::{self, Eal, Mbuf, Mempool, Port, PortConfig, Ring, RxBurst, TxBuffer};
use crate::neigh::NeighborUpdate;
use crate::pipeline::{
    Exception, LatePrefetch, PacketBuf, Pipeline, PipelineConfig, PortInfo, Verdict,
};
use crate::stats::{DropReason, WorkerStats};
use crate::table::ServiceTable;
use core::sync::atomic::{AtomicBool, Ordering};
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// Sessions examined for expiry per loop iteration that found no packet.
const EXPIRE_BUDGET_IDLE: usize = 64;
/// ... and per busy iteration. Each examined session is a cache line of a
/// table far larger than the caches, so a busy loop (about 32 packets)
/// scans few; at a busy loop rate of 100k-200k/s that is still a full pass
/// over a million sessions every 0.6-1.2 s, well inside the shortest
/// timeout that matters for capacity.
const EXPIRE_BUDGET_BUSY: usize = 8;
/// Packets a worker keeps while their next hop resolves (like Linux's unres_qlen).
const HOLD_MAX: usize = 64;
/// How long a held packet waits for its neighbour (ms).
const HOLD_MS: u64 = 3_000;
/// Live sessions from which the worker runs the burst pre-pass and the
/// cross-burst pipeline (below, the fast path looks sessions up through
/// the recent-lookup cache, [`crate::session::SessionTable::recent`]).
/// Measured (replay bench and real I/O, 2026-11-29): with one flow the
/// pre-pass's work is pure cost (55 → 77 cycles per packet), at 32 flows
/// still 4 % more, at 128 about even, and from 512 flows on it saves about
/// 15 %; 16,384 before (chosen for the first table layout), where 4,096
/// flows cost more per packet than 60,000.
const PREFETCH_SESSIONS: usize = 128;
/// How many packets ahead of processing the pre-pass reads a packet's
/// index bucket and prefetches its session (step 2): the buckets of the
/// whole burst are prefetched first (step 1), and a rolling window keeps
/// only this many session prefetches in flight instead of a whole burst's
/// at once, which the core's miss queues could not hold when the table is
/// in DRAM.
const SESSION_AHEAD: usize = 8;
/// How many packets ahead of processing the pre-pass looks for the
/// candidate in the alternative index bucket of a packet whose step 2
/// found none there (step 2b: that bucket was prefetched by step 2).
const ALT_AHEAD: usize = 6;
/// How many packets ahead of processing the pre-pass's step 3 prefetches
/// next-hop cache lines and masquerade endpoints (their sessions must have
/// landed by then).
const LATE_AHEAD: usize = 4;
// A packet's candidate (steps 2 and 2b) is known before step 3 reads it.
const _: () = assert!(LATE_AHEAD < ALT_AHEAD && ALT_AHEAD < SESSION_AHEAD);
/// Empty polls before the optional idle sleep kicks in.
const IDLE_POLLS: u32 = 256;

/// A port the dataplane drives.
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// The DPDK device name (`net_af_packet0`, `0000:01:00.0`, ...).
    pub device: String,
    /// 802.1Q VLAN id, if the port is a tagged interface.
    pub vlan: Option<u16>,
    /// Largest IP packet the port sends; larger ones get ICMP "too big".
    pub mtu: u16,
}

/// How to build the dataplane.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Ports, in the order routes and interfaces refer to them (index = port number).
    pub ports: Vec<PortSpec>,
    /// Worker lcores (one worker each).
    pub lcores: Vec<u32>,
    /// Mbufs per NUMA socket (0: computed from queue sizes).
    pub mbufs: u32,
    /// Rx descriptors per queue.
    pub rx_desc: u16,
    /// Tx descriptors per queue.
    pub tx_desc: u16,
    /// Per-worker pipeline sizing.
    pub pipeline: PipelineConfig,
    /// Sleep this long after a run of empty polls (0: spin, the default for production).
    pub idle_sleep_us: u32,
    /// Hand-off ring size per worker pair (power of two).
    pub handoff_ring: u32,
    /// The exception path into the host kernel, if any: at start the
    /// exception port gets the uplink's MAC address and MTU.
    pub exception: Option<Exception>,
    /// The node-wide per-backend connection counters the control plane
    /// hands out ([`crate::lbcount::CounterRegistry::counters`]); `None`:
    /// sessions are not counted (least-connections then picks at random).
    pub backend_counters: Option<Arc<crate::lbcount::BackendCounters>>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            ports: vec![],
            lcores: vec![],
            mbufs: 0,
            rx_desc: 1024,
            tx_desc: 1024,
            pipeline: PipelineConfig::default(),
            idle_sleep_us: 0,
            handoff_ring: 1024,
            exception: None,
            backend_counters: None,
        }
    }
}

/// A started dataplane.
pub struct Running {
    stop: Arc<AtomicBool>,
    lcores: Vec<u32>,
    /// Per-worker counters.
    pub stats: Vec<Arc<WorkerStats>>,
    /// Port facts, by port number.
    pub port_info: Vec<PortInfo>,
    /// Driver names, by port number.
    pub drivers: Vec<String>,
    /// Each worker's table memory, by worker (see [`Pipeline::table_memory`]).
    pub table_memory: Vec<crate::pipeline::TableMemory>,
    ports: Vec<Port>,
    _rings: Vec<Arc<Ring>>,
    _pools: Vec<Arc<Mempool>>,
}

impl Running {
    /// DPDK port ids, by port number.
    pub fn port_ids(&self) -> Vec<u16> {
        self.ports.iter().map(|p| p.id()).collect()
    }
    /// The mbuf pools (one per NUMA socket in use).
    pub fn pools(&self) -> Vec<Arc<Mempool>> {
        self._pools.clone()
    }
    /// The host kernel interface index of port `port` (a TAP or af_packet
    /// port's interface), if it has one.
    pub fn kernel_ifindex(&self, port: usize) -> Option<u32> {
        let i = self.ports.get(port)?.caps().ok()?.if_index;
        (i != 0).then_some(i)
    }
    /// Port statistics by port number (see [`Port::stats`]).
    pub fn port_stats(&self) -> Vec<Option<dpdk::PortCounters>> {
        self.ports.iter().map(|p| p.stats().ok()).collect()
    }
    /// True while any worker runs.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
    /// Stops the workers, waits for them, and stops and closes the ports.
    /// Returns the workers' exit codes. (Dropping `Running` does the same.)
    pub fn shutdown(mut self, _eal: &Eal) -> Vec<i32> {
        self.stop_workers()
    }

    fn stop_workers(&mut self) -> Vec<i32> {
        self.stop.store(true, Ordering::SeqCst);
        let codes = self.lcores.drain(..).map(dpdk::wait_lcore).collect();
        for p in &mut self.ports {
            p.close();
        }
        codes
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Workers must stop before ports close and pools are freed.
        self.stop_workers();
    }
}

/// Brings up pools, ports and rings and launches one worker per lcore.
pub fn start(
    eal: &Eal,
    cfg: &DataplaneConfig,
    table: &Arc<Rcu<ServiceTable>>,
) -> dpdk::Result<Running> {
    let n = cfg.lcores.len();
    if n == 0 {
        return Err(dpdk::Error::Other(
            "no worker lcores: give EAL at least one lcore besides the main one".into(),
        ));
    }
    if n > u16::MAX as usize {
        return Err(dpdk::Error::Other("too many workers".into()));
    }
    let mut ports = Vec::new();
    for p in &cfg.ports {
        ports.push(Port::by_name(&p.device)?);
    }
    // One pool per NUMA socket in use.
    let mut sockets: Vec<i32> = ports.iter().map(|p| p.socket()).collect();
    sockets.extend(cfg.lcores.iter().map(|&l| eal.socket_of(l) as i32));
    sockets.sort_unstable();
    sockets.dedup();
    let per_queue = cfg.rx_desc as u32 + cfg.tx_desc as u32 + 2 * dpdk::BURST as u32;
    let needed = (ports.len() as u32 * n as u32 * per_queue)
        + (n as u32 * n as u32 * cfg.handoff_ring)
        + n as u32 * 512
        + 1024;
    let mbufs = if cfg.mbufs > 0 {
        cfg.mbufs
    } else {
        needed.next_power_of_two() - 1
    };
    let mut pools = Vec::new();
    for s in &sockets {
        pools.push((
            *s,
            Arc::new(Mempool::new(
                &format!("dkp_pool_{s}"),
                mbufs,
                // DPDK refuses a per-lcore cache above n / 1.5.
                (mbufs / 4).min(256),
                2048 + 128,
                *s,
            )?),
        ));
    }
    let pool_for = |s: i32| {
        pools
            .iter()
            .find(|(ps, _)| *ps == s)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| pools[0].1.clone())
    };

    let pcfg = PortConfig {
        queues: n as u16,
        rx_desc: cfg.rx_desc,
        tx_desc: cfg.tx_desc,
        promiscuous: true,
    };
    let mut port_info = Vec::new();
    let mut drivers = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let caps = p.configure_and_start(&pcfg, &pool_for(p.socket()))?;
        drivers.push(caps.driver);
        port_info.push(PortInfo {
            mac: p.mac()?,
            vlan: cfg.ports[i].vlan,
            mtu: cfg.ports[i].mtu,
        });
    }
    if let Some(x) = cfg.exception {
        // The kernel's interface carries the node's MAC (the uplink's) and MTU.
        let (up, k) = (x.uplink as usize, x.kernel as usize);
        if up >= ports.len() || k >= ports.len() || up == k {
            return Err(dpdk::Error::Other(format!(
                "exception path: uplink {up} / exception port {k} out of range"
            )));
        }
        let mac = port_info[up].mac;
        ports[k].set_mac(mac)?;
        ports[k].set_mtu(cfg.ports[up].mtu)?;
        port_info[k].mac = ports[k].mac()?;
        port_info[k].mtu = cfg.ports[up].mtu;
    }
    let port_ids: Vec<u16> = ports.iter().map(|p| p.id()).collect();

    // rings[src][dst]: single producer src, single consumer dst.
    let mut rings: Vec<Vec<Option<Arc<Ring>>>> = vec![vec![None; n]; n];
    let mut all_rings = Vec::new();
    for (src, row) in rings.iter_mut().enumerate() {
        for (dst, slot) in row.iter_mut().enumerate() {
            if src != dst {
                let r = Arc::new(Ring::new(
                    &format!("dkp_ho_{src}_{dst}"),
                    cfg.handoff_ring,
                    sockets[0],
                )?);
                all_rings.push(r.clone());
                *slot = Some(r);
            }
        }
    }
    let neigh_queues: Vec<Arc<ArrayQueue<PeerNeighbor>>> =
        (0..n).map(|_| Arc::new(ArrayQueue::new(1024))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Vec<Arc<WorkerStats>> = (0..n).map(|_| Arc::new(WorkerStats::default())).collect();

    let affinity = Arc::new(crate::affinity::AffinityTable::new(
        cfg.pipeline.affinity_slots,
    ));
    let mut launched = Vec::new();
    let mut table_memory = Vec::new();
    for (id, &lcore) in cfg.lcores.iter().enumerate() {
        let reader = table
            .reader(id)
            .ok_or_else(|| dpdk::Error::Other(format!("RCU reader slot {id} unavailable")))?;
        let w = Worker {
            id: id as u16,
            ports: port_ids.clone(),
            pipeline: {
                let mut p = Pipeline::new(id as u16, n as u16, port_info.clone(), cfg.pipeline);
                p.set_affinity(affinity.clone());
                if let Some(c) = &cfg.backend_counters {
                    p.set_backend_counters(c.clone());
                }
                p.set_exception(cfg.exception);
                table_memory.push(p.table_memory());
                p
            },
            stats: stats[id].clone(),
            table: reader,
            handoff_rx: (0..n).filter_map(|src| rings[src][id].clone()).collect(),
            handoff_tx: rings[id].clone(),
            neigh_rx: neigh_queues[id].clone(),
            neigh_tx: (0..n)
                .filter(|&j| j != id)
                .map(|j| neigh_queues[j].clone())
                .collect(),
            pool: pool_for(eal.socket_of(lcore) as i32),
            stop: stop.clone(),
            ticks_per_ms: (eal.tsc_hz() / 1000).max(1),
            idle_sleep_us: cfg.idle_sleep_us,
        };
        if let Err(e) = eal.launch(lcore, move || w.run()) {
            stop.store(true, Ordering::SeqCst);
            for l in launched {
                eal.wait(l);
            }
            return Err(e);
        }
        launched.push(lcore);
    }
    Ok(Running {
        stop,
        lcores: launched,
        stats,
        port_info,
        drivers,
        table_memory,
        ports,
        _rings: all_rings,
        _pools: pools.into_iter().map(|(_, p)| p).collect(),
    })
}

/// What one worker tells the others about neighbours.
#[derive(Clone, Copy, Debug)]
enum PeerNeighbor {
    /// A neighbour it learned ([`Pipeline::learn_from_peer`]).
    Learned(NeighborUpdate),
    /// An answer it refused above its high-water mark, maybe to another
    /// worker's solicitation ([`Pipeline::answer_from_peer`]).
    Answer(NeighborUpdate),
}

/// One worker's context; lives on its lcore.
struct Worker {
    id: u16,
    ports: Vec<u16>,
    pipeline: Pipeline,
    stats: Arc<WorkerStats>,
    table: Reader<ServiceTable>,
    handoff_rx: Vec<Arc<Ring>>,
    handoff_tx: Vec<Option<Arc<Ring>>>,
    neigh_rx: Arc<ArrayQueue<PeerNeighbor>>,
    neigh_tx: Vec<Arc<ArrayQueue<PeerNeighbor>>>,
    pool: Arc<Mempool>,
    stop: Arc<AtomicBool>,
    ticks_per_ms: u64,
    idle_sleep_us: u32,
}

/// Per-loop buffers, kept off the heap-allocated context for locality.
struct Buffers {
    tx: Vec<TxBuffer>,
    handoff: Vec<TxBuffer>,
    held: Held,
    /// Hand-off rings by destination worker (`None` for ourselves).
    rings: Vec<Option<Arc<Ring>>>,
    /// DPDK port ids by port number.
    ports: Vec<u16>,
    /// Our queue on every port (= worker id).
    queue: u16,
}

/// Packets waiting for neighbour resolution: fixed slots, no allocation.
struct Held {
    slots: Vec<Option<(Mbuf, u16, Addr, u64)>>,
    count: usize,
}

impl Held {
    fn new() -> Self {
        Held {
            slots: (0..HOLD_MAX).map(|_| None).collect(),
            count: 0,
        }
    }
    fn put(&mut self, st: &WorkerStats, m: Mbuf, port: u16, addr: Addr, now: u64) {
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some((m, port, addr, now + HOLD_MS));
                self.count += 1;
            }
            None => st.count_drop(DropReason::NeighborMiss),
        }
    }
}

impl Worker {
    fn run(mut self) -> i32 {
        let n_ports = self.ports.len();
        let n_workers = self.handoff_tx.len();
        // Allocated once, before the loop.
        let mut rx = RxBurst::default();
        // One staged burst per port and one being received (boxed: a swap
        // moves two pointers).
        let mut staged: Vec<Box<Staged>> = (0..n_ports).map(|_| Box::default()).collect();
        let mut incoming: Box<Staged> = Box::default();
        let mut cands = [crate::session::NO_CANDIDATE; dpdk::BURST];
        let mut b = Buffers {
            tx: (0..n_ports).map(|_| TxBuffer::default()).collect(),
            handoff: (0..n_workers).map(|_| TxBuffer::default()).collect(),
            held: Held::new(),
            rings: self.handoff_tx.clone(),
            ports: self.ports.clone(),
            queue: self.id,
        };
        let start = dpdk::rdtsc();
        let mut idle = 0u32;
        let mut last_version = u64::MAX;
        let queue = self.id;
        self.stats
            .tsc_hz
            .store(self.ticks_per_ms * 1000, Ordering::Relaxed);
        let mut loop_start = start;
        loop {
            // Once asked to stop, one last loop receives nothing and
            // handles what is staged.
            let stopping = self.stop.load(Ordering::Relaxed);
            let now = (loop_start - start) / self.ticks_per_ms;
            let st = &*self.stats;
            while let Some(p) = self.neigh_rx.pop() {
                match p {
                    PeerNeighbor::Learned(u) => self.pipeline.learn_from_peer(u, now),
                    PeerNeighbor::Answer(u) => self.pipeline.answer_from_peer(u, now),
                }
            }
            let mut work = 0usize;
            {
                let table = self.table.read();
                if table.version != last_version {
                    last_version = table.version;
                    self.pipeline.on_table(table);
                    st.table_version.store(table.version, Ordering::Relaxed);
                    let (swept, carried) = self.pipeline.flush_epochs();
                    st.flush_epochs_swept.store(swept, Ordering::Relaxed);
                    st.flush_epochs_carried.store(carried, Ordering::Relaxed);
                }
                let prepass = self.pipeline.sessions.len() >= PREFETCH_SESSIONS;
                let late = if prepass {
                    self.pipeline.late_prefetch()
                } else {
                    LatePrefetch::default()
                };
                for (pi, &port) in self.ports.iter().enumerate() {
                    let got = if stopping {
                        0
                    } else {
                        dpdk::rx_burst(port, queue, &mut incoming.burst)
                    };
                    if got > 0 {
                        work += got;
                        WorkerStats::add(&st.rx_packets, got as u64);
                    }
                    let stage = &mut staged[pi];
                    let held = stage.burst.remaining();
                    // The cross-burst pipeline (see `Staged`), with a large
                    // table: the new burst's packet lines first; then the
                    // sessions of the staged burst's first packets (its
                    // index buckets were prefetched a loop ago); then the
                    // new burst's hashes and buckets, which gives those
                    // sessions time to land; then the staged burst, its
                    // later sessions (and, with many neighbours, next hops;
                    // with masqueraded sessions, their endpoints)
                    // prefetched a few packets ahead; the new burst is
                    // staged. With a small table a new burst is handled at
                    // once, after one staged while the table was large
                    // (per-port order).
                    if prepass && got > 0 {
                        incoming.burst.prefetch_all();
                    }
                    if held > 0 {
                        prime(&self.pipeline, stage, &mut cands, late);
                    }
                    if prepass {
                        for i in 0..got {
                            incoming.hashes[i] =
                                self.pipeline.prefetch_index(incoming.burst.peek(i));
                        }
                    }
                    if held > 0 {
                        work += held;
                        handle_burst(
                            &mut self.pipeline,
                            table,
                            st,
                            &mut b,
                            stage,
                            Some(&mut cands),
                            late,
                            pi,
                            now,
                        );
                    }
                    if got > 0 {
                        if prepass {
                            core::mem::swap(stage, &mut incoming);
                        } else {
                            handle_burst(
                                &mut self.pipeline,
                                table,
                                st,
                                &mut b,
                                &mut incoming,
                                None,
                                LatePrefetch::default(),
                                pi,
                                now,
                            );
                        }
                    }
                }
                for r in &self.handoff_rx {
                    let got = r.dequeue(&mut rx);
                    if got == 0 {
                        continue;
                    }
                    work += got;
                    WorkerStats::add(&st.handoff_in, got as u64);
                    for m in rx.by_ref() {
                        // Into a table past the pre-pass mark, the candidate
                        // the pre-pass would name (its steps at once): the
                        // recent-lookup cache serves small tables only.
                        let c = prepass.then(|| {
                            let p = &self.pipeline;
                            let h = p.prefetch_index(m.data());
                            p.prefetch_session_alt(h, p.prefetch_session(h))
                        });
                        handle(&mut self.pipeline, table, st, &mut b, m, now, true, c);
                    }
                }
                // Neighbour solicitations the packets above asked for.
                let mut pending = [(0u16, Addr::default()); 16];
                let mut np = 0;
                for s in self.pipeline.take_solicits() {
                    pending[np] = s;
                    np += 1;
                }
                for &(port, target) in &pending[..np] {
                    let Some(mut m) = self.pool.alloc() else {
                        st.count_drop(DropReason::NoMbuf);
                        continue;
                    };
                    m.set_len(128);
                    match self
                        .pipeline
                        .build_solicit(table, port, target, m.data_mut())
                    {
                        Some(len) => {
                            m.set_len(len);
                            WorkerStats::add(&st.neighbor_solicits, 1);
                            push_tx(&mut b.tx, &self.ports, queue, st, port, m);
                        }
                        None => drop(m),
                    }
                }
            }
            self.table.quiescent();
            if b.held.count > 0 {
                for slot in b.held.slots.iter_mut() {
                    let Some((_, port, addr, deadline)) = slot else {
                        continue;
                    };
                    let (port, addr, deadline) = (*port, *addr, *deadline);
                    if let Some(mac) = self.pipeline.neighbors.known(&addr) {
                        if let Some((mut m, ..)) = slot.take() {
                            m.data_mut()[0..6].copy_from_slice(&mac.0);
                            push_tx(&mut b.tx, &self.ports, queue, st, port, m);
                        }
                        b.held.count -= 1;
                    } else if now >= deadline {
                        *slot = None;
                        b.held.count -= 1;
                        st.count_drop(DropReason::NeighborMiss);
                    }
                }
            }
            for u in self.pipeline.take_learned() {
                for q in &self.neigh_tx {
                    let _ = q.push(PeerNeighbor::Learned(u));
                }
            }
            for u in self.pipeline.take_answers() {
                for q in &self.neigh_tx {
                    let _ = q.push(PeerNeighbor::Answer(u));
                }
            }
            for (pi, t) in b.tx.iter_mut().enumerate() {
                let (sent, bytes, dropped) = t.flush(self.ports[pi], queue);
                if sent + dropped > 0 {
                    WorkerStats::add(&st.tx_packets, sent as u64);
                    WorkerStats::add(&st.tx_bytes, bytes);
                    if dropped > 0 {
                        WorkerStats::add(&st.drops[DropReason::TxFull as usize], dropped as u64);
                    }
                }
            }
            for (dst, h) in b.handoff.iter_mut().enumerate() {
                if let Some(r) = &self.handoff_tx[dst] {
                    let (done, dropped) = h.flush_ring(r);
                    if done + dropped > 0 {
                        WorkerStats::add(&st.handoff_out, done as u64);
                        if dropped > 0 {
                            WorkerStats::add(
                                &st.drops[DropReason::HandoffFull as usize],
                                dropped as u64,
                            );
                        }
                    }
                }
            }
            let budget = if work == 0 {
                EXPIRE_BUDGET_IDLE
            } else {
                EXPIRE_BUDGET_BUSY
            };
            let expired = self.pipeline.sessions.expire(now, budget);
            if expired > 0 {
                WorkerStats::add(&st.sessions_expired, expired as u64);
            }
            st.sessions_active
                .store(self.pipeline.sessions.len() as u64, Ordering::Relaxed);
            if work == 0 {
                let n = &self.pipeline.neighbors;
                st.neighbors_active.store(n.len() as u64, Ordering::Relaxed);
                st.neighbors_refused.store(n.refused(), Ordering::Relaxed);
            }
            WorkerStats::add(&st.loops, 1);
            if work == 0 {
                idle = idle.saturating_add(1);
                if self.idle_sleep_us > 0 && idle >= IDLE_POLLS {
                    self.table.offline();
                    std::thread::sleep(std::time::Duration::from_micros(self.idle_sleep_us as u64));
                    self.table.online();
                } else {
                    dpdk::pause();
                }
            } else {
                idle = 0;
            }
            // Cycle accounting: one TSC read per loop, which also starts the
            // next; an empty loop's pause or sleep counts as idle.
            let loop_end = dpdk::rdtsc();
            let spent = loop_end.wrapping_sub(loop_start);
            loop_start = loop_end;
            if work == 0 {
                WorkerStats::add(&st.idle_cycles, spent);
            } else {
                WorkerStats::add(&st.busy_cycles, spent);
            }
            if stopping {
                break;
            }
        }
        self.table.offline();
        0
    }
}

/// A burst received in one loop and handled in the next, when the session
/// table is large enough for the pre-pass ([`PREFETCH_SESSIONS`]): the
/// cross-burst pipeline. Its packet lines and its index buckets are
/// prefetched when it arrives, and they land while the worker handles the
/// burst before it, so the first packets of a burst no longer wait for a
/// bucket and then for a session from DRAM. A burst waits one loop at most:
/// a loop that receives nothing still handles what is staged.
struct Staged {
    burst: RxBurst,
    /// The tuple hash of each packet (0: none), from
    /// [`Pipeline::prefetch_index`].
    hashes: [u64; dpdk::BURST],
}

impl Default for Staged {
    fn default() -> Self {
        Staged {
            burst: RxBurst::default(),
            hashes: [0; dpdk::BURST],
        }
    }
}

/// Pre-pass steps 2 and 2b for the first packets of a staged burst: reads
/// each one's (prefetched) index bucket and prefetches its candidate
/// session, for the very first ones the alternative bucket's candidate
/// when the primary named none, and step 3 (what `late` asks for) for the
/// very first ones.
#[inline(always)]
fn prime(p: &Pipeline, s: &Staged, cands: &mut [u32; dpdk::BURST], late: LatePrefetch) {
    let ahead = s.burst.remaining().min(SESSION_AHEAD);
    for (h, c) in s.hashes[..ahead].iter().zip(&mut cands[..ahead]) {
        *c = p.prefetch_session(*h);
    }
    for (h, c) in s.hashes[..ahead]
        .iter()
        .zip(&mut cands[..ahead])
        .take(ALT_AHEAD)
    {
        *c = p.prefetch_session_alt(*h, *c);
    }
    if late.any() {
        for &c in cands[..ahead].iter().take(LATE_AHEAD) {
            p.prefetch_late(c, late);
        }
    }
}

/// Handles every packet of `s.burst` (from port number `pi`). With `cands`
/// (the pre-pass: `s.hashes` filled, [`prime`] done) each packet's session
/// is prefetched `SESSION_AHEAD` packets before it is processed (or, from
/// its alternative bucket, `ALT_AHEAD` packets before), and the fast path
/// gets the candidate; without, packets go as they are.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn handle_burst(
    p: &mut Pipeline,
    table: &ServiceTable,
    st: &WorkerStats,
    b: &mut Buffers,
    s: &mut Staged,
    mut cands: Option<&mut [u32; dpdk::BURST]>,
    late: LatePrefetch,
    pi: usize,
    now: u64,
) {
    let n = s.burst.remaining();
    for (i, mut m) in s.burst.by_ref().enumerate() {
        let h = match cands.as_deref_mut() {
            Some(cands) => {
                if let Some(&h) = s.hashes[..n].get(i + SESSION_AHEAD) {
                    cands[i + SESSION_AHEAD] = p.prefetch_session(h);
                }
                if let Some(&h) = s.hashes[..n].get(i + ALT_AHEAD) {
                    cands[i + ALT_AHEAD] = p.prefetch_session_alt(h, cands[i + ALT_AHEAD]);
                }
                if late.any() {
                    if let Some(&c) = cands[..n].get(i + LATE_AHEAD) {
                        p.prefetch_late(c, late);
                    }
                }
                // What the pre-pass found: the fast path confirms the
                // candidate instead of probing the index again.
                Some(cands[i])
            }
            None => None,
        };
        WorkerStats::add(&st.rx_bytes, m.len() as u64);
        m.set_port(pi as u16);
        handle(p, table, st, b, m, now, false, h);
    }
}

#[inline(always)]
fn push_tx(tx: &mut [TxBuffer], ports: &[u16], queue: u16, st: &WorkerStats, port: u16, m: Mbuf) {
    let Some(buf) = tx.get_mut(port as usize) else {
        st.count_drop(DropReason::BadPort);
        return;
    };
    if buf.is_full() {
        let (sent, bytes, dropped) = buf.flush(ports[port as usize], queue);
        WorkerStats::add(&st.tx_packets, sent as u64);
        WorkerStats::add(&st.tx_bytes, bytes);
        WorkerStats::add(&st.drops[DropReason::TxFull as usize], dropped as u64);
    }
    buf.push(m);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn handle(
    p: &mut Pipeline,
    table: &ServiceTable,
    st: &WorkerStats,
    b: &mut Buffers,
    mut m: Mbuf,
    now: u64,
    handed_off: bool,
    candidate: Option<u32>,
) {
    if m.nb_segs() != 1 {
        st.count_drop(DropReason::MultiSegment);
        return;
    }
    let in_port = m.port();
    let v = p.process_hinted(table, st, in_port, &mut m, now, handed_off, candidate);
    match v {
        Verdict::Tx(port) | Verdict::ToKernel(port) | Verdict::FromKernel(port) => {
            push_tx(&mut b.tx, &b.ports, b.queue, st, port, m)
        }
        Verdict::HandOff(w) => match b.handoff.get_mut(w as usize) {
            Some(h) => {
                if h.is_full() {
                    if let Some(Some(r)) = b.rings.get(w as usize) {
                        let (done, dropped) = h.flush_ring(r);
                        WorkerStats::add(&st.handoff_out, done as u64);
                        WorkerStats::add(
                            &st.drops[DropReason::HandoffFull as usize],
                            dropped as u64,
                        );
                    }
                }
                h.push(m);
            }
            None => st.count_drop(DropReason::BadPort),
        },
        Verdict::Drop(r) => st.count_drop(r),
        Verdict::Consumed => {}
        Verdict::Hold { port, addr } => b.held.put(st, m, port, addr, now),
    }
}
