//! The per-packet pipeline: classify → (hand off) → session lookup / create →
//! rewrite → route → neighbour → transmit verdict.
//!
//! [`Pipeline::process`] is pure Rust over a [`PacketBuf`], so the same code
//! runs on DPDK mbufs in the worker and on plain buffers in unit tests. It
//! never allocates: the session and neighbour tables are pre-sized, and
//! generated packets (RST, ICMP unreachable, ARP/ND answers) are written in
//! place in the received buffer.
use crate::addr::{flow_hash, owner_of, Addr, FlowKey, Proto, SockAddr};
use crate::affinity::{backend_key, client_hash, AffinityTable};
use crate::neigh::{NeighborTimers, NeighborUpdate, Neighbors, Resolution};
use crate::packet::sctp;
use crate::packet::{
    arp, checksum, ethernet, icmp, ip_proto, ArpPacket, Error as PktError, EthernetFrame,
    IcmpPacket, Ipv4Packet, Ipv6Packet, MacAddr, SctpPacket, TcpPacket, UdpPacket,
};
use crate::session::{
    key_hash, key_hash_v4, key_hash_v6, recent_v4, recent_v6, tcp, Dir, InsertError, SctpState,
    Session, SessionTable, Timeouts,
};
use crate::stats::{DropReason, WorkerStats};
use crate::table::{Frontend, NoBackends, ServiceTable};
use std::sync::Arc;

/// A packet buffer with head- and tailroom (an mbuf, or a `Vec` in tests).
pub trait PacketBuf {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the packet by `n` bytes at the front; false if there is no headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; false if the packet is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Shortens the packet to `len` bytes (no-op if already shorter).
    fn truncate(&mut self, len: usize);
    /// Grows the packet by `n` bytes at the end; false if there is no tailroom.
    fn extend(&mut self, n: usize) -> bool;
    /// What the NIC found checking the IPv4 header checksum on receipt
    /// (an mbuf's `RTE_MBUF_F_RX_IP_CKSUM_*` flags); unknown by default.
    #[inline]
    fn rx_ip_checksum(&self) -> RxChecksum {
        RxChecksum::Unknown
    }
}

/// A receive checksum check the NIC did (DPDK's `RTE_MBUF_F_RX_*_CKSUM_*`).
/// Only [`RxChecksum::Good`] changes anything: the fast path then skips
/// its own IPv4 header checksum check; every other value (a NIC that did
/// not check, a `Bad` verdict) leaves the check to software as without
/// offloads, so a bad header is dropped and counted as before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RxChecksum {
    /// Not checked (no offload, or the PMD does not say).
    #[default]
    Unknown,
    /// Checked and correct.
    Good,
    /// Checked and wrong.
    Bad,
    /// Not checkable (the NIC says the packet has none / is not IPv4).
    None,
}

/// A heap buffer with mbuf-like head- and tailroom: a [`PacketBuf`] for
/// tests, benchmarks and fuzzing (the worker uses DPDK mbufs).
#[derive(Clone, Debug)]
pub struct VecBuf {
    buf: Vec<u8>,
    off: usize,
    len: usize,
    ip_checksum: RxChecksum,
}

/// Headroom of a [`VecBuf`] (as an mbuf's).
pub const VECBUF_HEADROOM: usize = 128;
/// Tailroom of a [`VecBuf`].
pub const VECBUF_TAILROOM: usize = 64;

impl VecBuf {
    /// A buffer holding `frame`.
    pub fn new(frame: &[u8]) -> Self {
        let mut buf = vec![0u8; VECBUF_HEADROOM + frame.len() + VECBUF_TAILROOM];
        buf[VECBUF_HEADROOM..VECBUF_HEADROOM + frame.len()].copy_from_slice(frame);
        VecBuf {
            buf,
            off: VECBUF_HEADROOM,
            len: frame.len(),
            ip_checksum: RxChecksum::Unknown,
        }
    }
    /// Sets what [`PacketBuf::rx_ip_checksum`] reports (as a NIC's receive
    /// checksum offload would); kept across [`VecBuf::reset`].
    pub fn set_rx_ip_checksum(&mut self, c: RxChecksum) {
        self.ip_checksum = c;
    }
    /// Puts `frame` back in (reuses the allocation when it fits).
    pub fn reset(&mut self, frame: &[u8]) {
        if self.buf.len() < VECBUF_HEADROOM + frame.len() + VECBUF_TAILROOM {
            let c = self.ip_checksum;
            *self = VecBuf::new(frame);
            self.ip_checksum = c;
            return;
        }
        self.off = VECBUF_HEADROOM;
        self.len = frame.len();
        self.buf[VECBUF_HEADROOM..VECBUF_HEADROOM + frame.len()].copy_from_slice(frame);
    }
    /// A copy of the packet bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.data().to_vec()
    }
}

impl PacketBuf for VecBuf {
    #[inline]
    fn rx_ip_checksum(&self) -> RxChecksum {
        self.ip_checksum
    }
    fn data(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.off {
            return false;
        }
        self.off -= n;
        self.len += n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.off += n;
        self.len -= n;
        true
    }
    fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
        }
    }
    fn extend(&mut self, n: usize) -> bool {
        if self.off + self.len + n > self.buf.len() {
            return false;
        }
        self.len += n;
        true
    }
}

/// What to do with a packet after [`Pipeline::process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit on this port.
    Tx(u16),
    /// Give it to the worker that owns its flow.
    HandOff(u16),
    /// Free it and count the reason.
    Drop(DropReason),
    /// Free it; it was fully handled (e.g. an ARP reply we learned from).
    Consumed,
    /// Keep it until the neighbour `addr` on `port` resolves (the L2 header
    /// is written except the destination MAC); a solicitation is queued.
    Hold {
        /// Egress port.
        port: u16,
        /// Next hop being resolved.
        addr: Addr,
    },
    /// Give it to the host kernel: transmit it unchanged on this port, the
    /// exception port (see [`Exception`]).
    ToKernel(u16),
    /// The kernel's own transmission, from the exception port: transmit it
    /// unchanged on this port, the uplink.
    FromKernel(u16),
}

/// The exception path into the host kernel: a port (a TAP or virtio_user
/// interface carrying the uplink's MAC, the kernel holding the node's
/// addresses on it) paired with the uplink the dataplane owns. Frames from
/// the uplink that are not Service traffic and not the dataplane's own go to
/// the kernel ([`Verdict::ToKernel`]): ARP and neighbour discovery for the
/// node's addresses, ICMP and TCP/UDP/SCTP to a node address that match no
/// frontend or session, multicast and broadcast, other EtherTypes.
/// Everything from the exception port goes out of the uplink unchanged
/// ([`Verdict::FromKernel`]), except the kernel's own Service traffic
/// (ARP for VIPs, packets to frontends or of sessions), which is handled
/// like a client's; translated packets for a node address go to the kernel.
/// Only the general path (and the fast path's next-hop cache fill) looks
/// at this: the fast path handles established sessions only, whichever port
/// they arrive on.
///
/// Destinations the table routes onto the exception port (the node's pod
/// CIDRs, see [`crate::table::Route`]) are behind the kernel: translated
/// packets for them are delivered to the kernel, which routes them to the
/// pod. A new flow whose client also came from the kernel (a local pod or
/// the node itself) and whose backend is behind the kernel is masqueraded
/// to the exception SNAT address of its family (`snat_v4`/`snat_v6`): an
/// address the kernel does not hold and routes onto the exception port, so
/// the backend's reply comes back through the dataplane to be translated
/// instead of going from pod to pod inside the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The uplink port whose non-Service traffic goes to the kernel.
    pub uplink: u16,
    /// The exception port into the kernel.
    pub kernel: u16,
    /// IPv4 masquerade address for flows between two endpoints behind the
    /// kernel (none: such flows are dropped, `no_exception_snat`).
    pub snat_v4: Option<Addr>,
    /// IPv6 masquerade address, as `snat_v4`.
    pub snat_v6: Option<Addr>,
}

impl Exception {
    /// The exception path over `uplink` and `kernel`, without SNAT addresses.
    pub fn new(uplink: u16, kernel: u16) -> Self {
        Exception {
            uplink,
            kernel,
            snat_v4: None,
            snat_v6: None,
        }
    }

    /// The exception SNAT address of a family.
    #[inline]
    pub fn snat(&self, v4: bool) -> Option<Addr> {
        if v4 {
            self.snat_v4
        } else {
            self.snat_v6
        }
    }

    /// True when `a` is an exception SNAT address.
    #[inline]
    pub fn is_snat(&self, a: &Addr) -> bool {
        self.snat(a.is_v4()) == Some(*a)
    }
}

/// Static facts about a port the pipeline needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's MAC address.
    pub mac: MacAddr,
    /// 802.1Q VLAN id the port sends and expects, if any.
    pub vlan: Option<u16>,
    /// Largest IP packet the port sends (bytes, L3).
    pub mtu: u16,
}

/// Sizing and timers of a pipeline.
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    /// Session capacity of this worker.
    pub sessions: usize,
    /// Session timeouts.
    pub timeouts: Timeouts,
    /// Neighbour cache capacity.
    pub neighbors: usize,
    /// Neighbour timers.
    pub neighbor_timers: NeighborTimers,
    /// Slots of the ClientIP-affinity memory (shared by all workers).
    pub affinity_slots: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            sessions: 1 << 16,
            timeouts: Timeouts::default(),
            neighbors: 4096,
            neighbor_timers: NeighborTimers::default(),
            affinity_slots: 1 << 16,
        }
    }
}

const MAX_PENDING: usize = 16;
/// Refused answers passed on to the other workers per loop
/// ([`Pipeline::take_answers`]).
pub const MAX_ANSWERS: usize = 4;
/// See [`Pipeline::late_prefetch`].
pub const NEXT_HOP_PREFETCH_NEIGHBORS: usize = 1024;

/// What step 3 of the burst pre-pass ([`Pipeline::prefetch_late`])
/// prefetches for a packet's candidate session, a few packets before the
/// packet is processed (its session line has landed by then): each only
/// where it pays ([`Pipeline::late_prefetch`]), since the check costs
/// instructions on every packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatePrefetch {
    /// The next-hop cache line of the session's destination.
    pub next_hop: bool,
    /// A masqueraded session's endpoint in the session table's side array.
    pub snat: bool,
}

impl LatePrefetch {
    /// Whether step 3 has anything to do.
    #[inline(always)]
    pub fn any(self) -> bool {
        self.next_hop || self.snat
    }
}
/// Masquerade ports: this range is split into one contiguous partition per
/// worker, so the SNAT port of a reply names its owning worker.
pub const SNAT_PORTS: core::ops::RangeInclusive<u16> = 32768..=65535;
/// Ports tried for a new masqueraded flow before giving up (counted drop).
const SNAT_TRIES: u32 = 64;

/// Worker `id`'s SNAT partition: `(first port, number of ports)`.
#[inline]
pub fn snat_range(id: u16, n_workers: u16) -> (u16, usize) {
    let total = (*SNAT_PORTS.end() as usize) - (*SNAT_PORTS.start() as usize) + 1;
    let n = n_workers.max(1) as usize;
    let per = total / n;
    (*SNAT_PORTS.start() + (id as usize * per) as u16, per)
}

/// The worker owning SNAT port `port` (ports outside the range: worker 0).
#[inline]
pub fn snat_owner(port: u16, n_workers: u16) -> u16 {
    if !SNAT_PORTS.contains(&port) {
        return 0;
    }
    let total = (*SNAT_PORTS.end() as usize) - (*SNAT_PORTS.start() as usize) + 1;
    let per = total / n_workers.max(1) as usize;
    (((port - *SNAT_PORTS.start()) as usize / per) as u16).min(n_workers.max(1) - 1)
}
/// A non-zero seed for worker `id`'s generator, different per worker and
/// per start.
fn random_seed(id: u16) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::addr::fmix64(t ^ (u64::from(id) << 48) ^ 0x9e37_79b9_7f4a_7c15) | 1
}

const DEFAULT_TTL: u8 = 64;
const ICMP4_ERR_MAX: usize = 576;
/// Packets up to this size fit every port (the IPv4 minimum MTU): no MTU check.
const MIN_MTU: usize = 576;
const ICMP6_ERR_MAX: usize = 1280;

/// One worker's translation state. See the module docs.
pub struct Pipeline {
    /// This worker's index.
    pub id: u16,
    /// Number of workers (owners are computed modulo this).
    pub n_workers: u16,
    /// The connection table.
    pub sessions: SessionTable,
    /// The neighbour cache.
    pub neighbors: Neighbors,
    ports: Vec<PortInfo>,
    solicits: [(u16, Addr); MAX_PENDING],
    n_solicits: usize,
    learned: [NeighborUpdate; MAX_PENDING],
    n_learned: usize,
    answers: [NeighborUpdate; MAX_ANSWERS],
    n_answers: usize,
    statics_version: Option<u64>,
    affinity: Arc<AffinityTable>,
    fast_path: bool,
    exception: Option<Exception>,
    /// The fast path's next-hop cache: route + fresh neighbour per
    /// destination, valid for one table version and neighbour generation.
    egress: fast::EgressCache,
    /// The `random` algorithm's generator state (never 0).
    rng: u64,
    /// Which sessions are known to have a valid backend.
    valid: Validity,
}

/// A worker's view of the flush epochs ([`crate::table::FlushEpoch`]):
/// which sessions still need the stale-UDP check. A session whose
/// [`Session::validated`] is `tag` has a backend the table in use still
/// has; one whose tag is `behind` had one at the epoch before, so only
/// that change's removed list is checked; any other is looked up in its
/// Service. Tags are the worker's own (one per sweep), not table versions:
/// a change that removes no backend of this worker's UDP sessions is
/// carried over without a sweep ([`Pipeline::on_table`]).
#[derive(Clone, Copy, Debug)]
struct Validity {
    /// The flush epoch of the last table seen (`u64::MAX`: none yet).
    epoch: u64,
    tag: u16,
    /// A tag, or [`NOT_BEHIND`].
    behind: u32,
    /// Epoch changes swept (sessions revalidated) and carried over.
    swept: u64,
    carried: u64,
}

/// [`Validity::behind`] when no session is known to be one epoch behind.
const NOT_BEHIND: u32 = u32::MAX;

impl Validity {
    /// True when a session validated with tag `validated` was valid at the
    /// epoch before the table's (see [`Validity`]).
    #[inline(always)]
    fn behind(&self, validated: u16) -> bool {
        u32::from(validated) == self.behind
    }
}

/// Offsets and fields of a parsed IP packet.
#[derive(Clone, Copy, Debug)]
struct Ip {
    v4: bool,
    l3: usize,
    l4: usize,
    end: usize,
    src: Addr,
    dst: Addr,
    proto: u8,
}

impl Pipeline {
    /// A pipeline for worker `id` of `n_workers`, over `ports`.
    pub fn new(id: u16, n_workers: u16, ports: Vec<PortInfo>, cfg: PipelineConfig) -> Self {
        Pipeline {
            id,
            n_workers: n_workers.max(1),
            sessions: SessionTable::new(cfg.sessions, cfg.timeouts),
            neighbors: Neighbors::new(cfg.neighbors, cfg.neighbor_timers),
            ports,
            solicits: [(0, Addr::default()); MAX_PENDING],
            n_solicits: 0,
            learned: [NeighborUpdate {
                addr: Addr::default(),
                mac: MacAddr([0; 6]),
                port: 0,
            }; MAX_PENDING],
            n_learned: 0,
            answers: [NeighborUpdate {
                addr: Addr::default(),
                mac: MacAddr([0; 6]),
                port: 0,
            }; MAX_ANSWERS],
            n_answers: 0,
            statics_version: None,
            affinity: Arc::new(AffinityTable::new(cfg.affinity_slots)),
            fast_path: true,
            exception: None,
            egress: fast::EgressCache::new(cfg.neighbors),
            rng: random_seed(id),
            valid: Validity {
                epoch: u64::MAX,
                tag: 0,
                behind: NOT_BEHIND,
                swept: 0,
                carried: 0,
            },
        }
    }

    /// Counts this worker's sessions in the node-wide per-backend counters
    /// (the array the published tables' counter indices refer to; see
    /// [`crate::lbcount`]). Set before the first packet.
    pub fn set_backend_counters(&mut self, c: Arc<crate::lbcount::BackendCounters>) {
        self.sessions.set_counters(c);
    }

    /// Shares one ClientIP-affinity memory between pipelines (all workers).
    pub fn set_affinity(&mut self, a: Arc<AffinityTable>) {
        self.affinity = a;
    }

    /// Turns the established-flow fast path (`pipeline/fast.rs`) on or off (on by
    /// default; off leaves every packet to the general path, which the
    /// differential tests compare it with).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// Sets the exception path into the host kernel (none by default: then
    /// nothing goes to the kernel and the dataplane answers ARP/ND and ping
    /// for the node's addresses itself).
    pub fn set_exception(&mut self, x: Option<Exception>) {
        self.exception = x;
    }

    /// The exception path, if any.
    pub fn exception(&self) -> Option<Exception> {
        self.exception
    }

    /// [`Verdict::ToKernel`] (counted) when a frame that arrived on
    /// `in_port` is the kernel's: `in_port` is the exception path's uplink.
    #[inline]
    fn to_kernel(&self, st: &WorkerStats, in_port: u16) -> Option<Verdict> {
        let x = self.exception?;
        if x.uplink != in_port {
            return None;
        }
        WorkerStats::add(&st.exception_to_kernel, 1);
        Some(Verdict::ToKernel(x.kernel))
    }

    /// True when `in_port` is the exception port (frames the kernel sent).
    #[inline]
    fn is_kernel_port(&self, in_port: u16) -> bool {
        self.exception.is_some_and(|x| x.kernel == in_port)
    }

    /// True when the table routes `dst` onto the exception port: it is
    /// behind the kernel (a local pod).
    #[inline]
    fn behind_kernel(&self, t: &ServiceTable, dst: &Addr) -> bool {
        self.exception
            .is_some_and(|x| t.route(dst).is_some_and(|h| h.port == x.kernel))
    }

    /// True when `a` is an exception SNAT address.
    #[inline]
    fn is_exception_snat(&self, a: &Addr) -> bool {
        self.exception.is_some_and(|x| x.is_snat(a))
    }

    /// [`Self::to_kernel`] for a packet to `dst` when it is for the node
    /// itself or multicast/broadcast (the kernel's business).
    #[inline]
    fn node_to_kernel(
        &self,
        t: &ServiceTable,
        st: &WorkerStats,
        dst: &Addr,
        in_port: u16,
    ) -> Option<Verdict> {
        if t.local_port(dst).is_some() || dst.is_multicast_or_broadcast() {
            self.to_kernel(st, in_port)
        } else {
            None
        }
    }

    /// True when a frame the kernel sent on the exception port is Service
    /// traffic the dataplane handles like any other: TCP/UDP/SCTP to a
    /// frontend or of a session (the node's own connections to ClusterIPs,
    /// translated here), and ARP requests and neighbour solicitations for
    /// a Service VIP (answered here, so the kernel can route Service CIDRs
    /// onto the exception port).
    ///
    /// Also Service traffic: packets to the exception SNAT address (replies
    /// of masqueraded flows to local pods, ICMP errors about them) and
    /// packets of sessions with a backend behind the kernel — with several
    /// workers, a local pod's packet that another worker may hold the
    /// session of (the general path hands it to the owner, which gives it
    /// back to the uplink when it holds no session either).
    fn kernel_to_service(&self, t: &ServiceTable, d: &[u8]) -> bool {
        if let Some(k) = quick_key(d) {
            let fe = Frontend {
                addr: SockAddr::new(k.dst, k.dport),
                proto: k.proto,
            };
            return t.frontend(&fe).is_some()
                || self.sessions.lookup(&k).is_some()
                || self.is_exception_snat(&k.dst)
                || (self.n_workers > 1
                    && self.behind_kernel(t, &k.src)
                    && self.owner_for(t, &k) != self.id);
        }
        let l2 = l2_len(d);
        let ethertype = d.get(l2 - 2..l2);
        let target = if ethertype == Some(&[0x08, 0x06]) {
            // An ARP request: its target address.
            match d.get(l2..l2 + 28) {
                Some(a) if a[6..8] == [0, 1] => Addr::v4([a[24], a[25], a[26], a[27]]),
                _ => return false,
            }
        } else if ethertype == Some(&[0x86, 0xdd]) {
            match d.get(l2..l2 + 64) {
                // A neighbour solicitation right after the IPv6 header: its target.
                Some(ip) if ip[6] == ip_proto::ICMPV6 && ip[40] == 135 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&ip[48..64]);
                    Addr::v6(a)
                }
                // Other IPv6 to the exception SNAT address (ICMPv6 errors
                // about masqueraded flows).
                _ => {
                    return d.get(l2 + 24..l2 + 40).is_some_and(|a| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(a);
                        self.is_exception_snat(&Addr::v6(b))
                    })
                }
            }
        } else if ethertype == Some(&[0x08, 0x00]) {
            // IPv4 to the exception SNAT address (ICMP errors about
            // masqueraded flows).
            return d
                .get(l2 + 16..l2 + 20)
                .is_some_and(|a| self.is_exception_snat(&Addr::v4([a[0], a[1], a[2], a[3]])));
        } else {
            return false;
        };
        (t.owns(&target) && t.local_port(&target).is_none()) || self.is_exception_snat(&target)
    }

    /// Ports this pipeline knows.
    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// Applies per-table state when the table changed: static neighbours,
    /// and the flush epoch. Call it before the first packet of each new
    /// table (the worker does when the version changes).
    ///
    /// A new flush epoch means backends were removed. When the change
    /// follows the last epoch seen, its removed list is known, and no UDP
    /// session of this worker may use a removed backend
    /// ([`SessionTable::may_have_udp_to`]), the sessions are carried over:
    /// they stay valid with their tags, and no packet pays for a
    /// revalidation. Otherwise they are swept: a new tag, so each session
    /// revalidates on its next packet; sessions valid before check only
    /// the change's removed list when it follows the last epoch seen, and
    /// sessions still one sweep behind (or after a carry) check their
    /// Service. A worker that skipped a table, or a change too large to
    /// list, always sweeps.
    pub fn on_table(&mut self, t: &ServiceTable) {
        if self.statics_version != Some(t.version) {
            for n in t.static_neighbors() {
                self.neighbors.set_static(n.addr, n.mac, n.port);
            }
            self.statics_version = Some(t.version);
        }
        let e = &t.epoch;
        let v = &mut self.valid;
        if e.current == v.epoch {
            return;
        }
        let follows = v.epoch != u64::MAX && e.previous == v.epoch;
        let removed = e.removed().filter(|_| follows);
        match removed {
            Some(r) if !r.iter().any(|(_, b)| self.sessions.may_have_udp_to(b)) => {
                // Sessions still one sweep behind needed the previous
                // change's list, which this table no longer has.
                v.behind = NOT_BEHIND;
                v.carried += 1;
            }
            _ => {
                v.behind = if removed.is_some() {
                    u32::from(v.tag)
                } else {
                    NOT_BEHIND
                };
                v.tag = v.tag.wrapping_add(1);
                // The first table is not a change.
                v.swept += u64::from(v.epoch != u64::MAX);
            }
        }
        v.epoch = e.current;
    }

    /// Flush epoch changes (after the first table) this worker swept (its
    /// sessions revalidated) and carried over without a sweep
    /// ([`Pipeline::on_table`]).
    pub fn flush_epochs(&self) -> (u64, u64) {
        (self.valid.swept, self.valid.carried)
    }

    /// Takes the solicitations the last packets asked for: `(port, target)`.
    pub fn take_solicits(&mut self) -> impl Iterator<Item = (u16, Addr)> + '_ {
        let n = core::mem::take(&mut self.n_solicits);
        self.solicits[..n].iter().copied()
    }

    /// Takes neighbours learned from the last packets (to tell other workers).
    pub fn take_learned(&mut self) -> impl Iterator<Item = NeighborUpdate> + '_ {
        let n = core::mem::take(&mut self.n_learned);
        self.learned[..n].iter().copied()
    }

    /// Applies a neighbour learned by another worker.
    pub fn learn_from_peer(&mut self, u: NeighborUpdate, now: u64) {
        self.neighbors.learn(u, now);
    }

    /// Takes the answers (ARP replies, solicited advertisements) the last
    /// packets brought that this worker refused above its neighbour
    /// cache's high-water mark: answers from one neighbour always reach
    /// the same queue, so one may answer another worker's solicitation
    /// (see [`Pipeline::answer_from_peer`]). At most [`MAX_ANSWERS`] per
    /// call, apart from [`Pipeline::take_learned`]'s, so that a flood of
    /// spoofed answers cannot crowd out real updates.
    pub fn take_answers(&mut self) -> impl Iterator<Item = NeighborUpdate> + '_ {
        let n = core::mem::take(&mut self.n_answers);
        self.answers[..n].iter().copied()
    }

    /// Applies an answer another worker passed on
    /// ([`Pipeline::take_answers`]): only if this worker is resolving
    /// that neighbour.
    pub fn answer_from_peer(&mut self, u: NeighborUpdate, now: u64) {
        self.neighbors.resolve_from_peer(u, now);
    }

    /// Burst pre-pass, step 1: the session-index hash of the tuple of the
    /// frame `d` (a quick parse: Ethernet [+ one VLAN tag], IPv4 or IPv6
    /// without extension headers, TCP/UDP/SCTP; 0 for anything else), with
    /// the index lines its lookup will read prefetched. Only a hint: the
    /// packet is fully parsed and checked later by [`Pipeline::process`].
    #[inline]
    pub fn prefetch_index(&self, d: &[u8]) -> u64 {
        // Untagged IPv4 and IPv6 (the common cases) hashed straight from
        // the frame.
        let h = if d.get(12..14) == Some(&[0x08, 0x00][..]) {
            quick_hash_v4(d)
        } else {
            quick_hash_other(d)
        };
        if h != 0 {
            self.sessions.prefetch(h);
        }
        h
    }

    /// Burst pre-pass, step 2 (after step 1 for the whole burst): prefetches
    /// the session a tuple with hash `h` probably belongs to, and returns
    /// that candidate for step 3 ([`Pipeline::prefetch_late`]).
    #[inline]
    pub fn prefetch_session(&self, h: u64) -> u32 {
        if h != 0 {
            self.sessions.prefetch_session(h)
        } else {
            crate::session::NO_CANDIDATE
        }
    }

    /// Burst pre-pass, step 2b (a few packets after step 2 returned `c`
    /// for hash `h`, before step 3): when step 2 found no candidate, the
    /// one the tuple's alternative index bucket names (its session
    /// prefetched); otherwise `c`. With the pre-pass the fast path only
    /// confirms candidates and leaves every other packet to the general
    /// path, so a session in its alternative bucket needs this step to
    /// stay on the fast path.
    #[inline]
    pub fn prefetch_session_alt(&self, h: u64, c: u32) -> u32 {
        if c == crate::session::NO_CANDIDATE && h != 0 {
            self.sessions.prefetch_session_alt(h)
        } else {
            c
        }
    }

    /// Burst pre-pass, step 3 (a few packets before the packet whose step 2
    /// returned `c` is processed, so that its session has landed): what
    /// `what` asks for of the candidate session — the fast path's next-hop
    /// cache line for the destination it would send the packet to (its
    /// backend, or its client for a reply), and, when it masquerades, its
    /// masquerade endpoint ([`SessionTable::prefetch_snat`]). Only hints,
    /// like steps 1 and 2: each is the one miss the session prefetch
    /// leaves, with a table of many backends and for masqueraded flows in
    /// a table beyond the caches.
    #[inline(always)]
    pub fn prefetch_late(&self, c: u32, what: LatePrefetch) {
        if let Some((s, reply)) = self.sessions.candidate(c) {
            if what.next_hop {
                let to = if reply {
                    &s.client().addr
                } else {
                    &s.backend().addr
                };
                self.egress.prefetch(to);
            }
            if what.snat && s.snat() {
                self.sessions.prefetch_snat(c);
            }
        }
    }

    /// What step 3 of the pre-pass should prefetch now
    /// ([`Pipeline::prefetch_late`]): next-hop lines with more than
    /// [`NEXT_HOP_PREFETCH_NEIGHBORS`] neighbours (where the next-hop cache
    /// lines in use outgrow the core's own caches; below that they stay hot
    /// and the prefetch would only add instructions), masquerade endpoints
    /// while any session masquerades.
    #[inline]
    pub fn late_prefetch(&self) -> LatePrefetch {
        LatePrefetch {
            next_hop: self.neighbors.len() > NEXT_HOP_PREFETCH_NEIGHBORS,
            snat: self.sessions.masqueraded() > 0,
        }
    }

    /// Processes one packet that arrived on `in_port` (or was handed over by
    /// another worker when `handed_off`). The buffer may be rewritten in place.
    #[inline]
    pub fn process<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pkt: &mut B,
        now: u64,
        handed_off: bool,
    ) -> Verdict {
        self.process_hinted(t, st, in_port, pkt, now, handed_off, None)
    }

    /// [`Pipeline::process`] after the burst pre-pass, when `candidate` is
    /// `Some`: the session its steps 2 and 2b named for this frame
    /// ([`Pipeline::prefetch_session`], [`Pipeline::prefetch_session_alt`];
    /// [`crate::session::NO_CANDIDATE`]: none). The fast path then only
    /// confirms the candidate against the whole tuple (its session is live
    /// and the tuple is its own) and leaves every other packet — no
    /// candidate, or one freed or reused since — to the general path,
    /// which looks the tuple up for itself: a candidate is only a hint,
    /// never a wrong session. With `None` (no pre-pass: tables below the
    /// worker's pre-pass mark) the fast path looks the tuple up through
    /// the session table's recent-lookup cache, and on a miss hashes it and
    /// probes the index inline ([`SessionTable::recent`]). Always inlined
    /// (into the worker's loop, where `candidate` is `Some` or `None`
    /// statically on the receive path, so each copy carries only its own
    /// lookup): out of line, the fast path's call and spills cost ~90
    /// instructions.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn process_hinted<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pkt: &mut B,
        now: u64,
        handed_off: bool,
        candidate: Option<u32>,
    ) -> Verdict {
        debug_assert_eq!(
            t.epoch.current, self.valid.epoch,
            "Pipeline::on_table was not called for this table"
        );
        if self.fast_path {
            if let Some(v) = self.fast_v4(t, st, in_port, pkt, now, candidate) {
                return v;
            }
            // IPv6 only after the IPv4 fast path passed, and out of line:
            // the IPv4 fast path's code and instruction count stay as they
            // were (checking the ethertype first, or handing the hint to
            // the general path, cost it 2-7 instructions per packet).
            if pkt.data().get(12..14) == Some(&[0x86, 0xdd][..]) {
                return self.fast_v6_or_general(t, st, in_port, pkt, now, handed_off, candidate);
            }
        }
        self.general(t, st, in_port, pkt, now, handed_off)
    }

    /// IPv6 with the fast path on: [`Pipeline::fast_v6`], else the
    /// general path. Out of the IPv4 fast path's line.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn fast_v6_or_general<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pkt: &mut B,
        now: u64,
        handed_off: bool,
        candidate: Option<u32>,
    ) -> Verdict {
        if let Some(v) = self.fast_v6(t, st, in_port, pkt, now, candidate) {
            return v;
        }
        self.general(t, st, in_port, pkt, now, handed_off)
    }

    /// The general path: every packet the fast path did not take.
    #[inline(never)]
    fn general<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pkt: &mut B,
        now: u64,
        handed_off: bool,
    ) -> Verdict {
        let Some(pinfo) = self.ports.get(in_port as usize).copied() else {
            return Verdict::Drop(DropReason::BadPort);
        };
        if let Some(x) = self.exception {
            if in_port == x.kernel && !self.kernel_to_service(t, pkt.data()) {
                // The kernel's transmissions leave by the uplink as they
                // are, except its own Service traffic (below).
                WorkerStats::add(&st.exception_from_kernel, 1);
                return Verdict::FromKernel(x.uplink);
            }
        }
        let (l2, ethertype, dst_mac, src_mac) = {
            let eth = match EthernetFrame::new_checked(pkt.data()) {
                Ok(e) => e,
                Err(e) => return Verdict::Drop(pkt_drop(e)),
            };
            if eth.vlan_tci().map(|t| t & 0x0fff) != pinfo.vlan {
                return Verdict::Drop(DropReason::VlanMismatch);
            }
            (
                eth.header_len(),
                eth.ethertype(),
                eth.dst_addr(),
                eth.src_addr(),
            )
        };
        // The kernel addresses its frames to their next hop (a local pod's
        // answer to an outside client goes to the client's MAC): the ones
        // that reach this point are Service traffic all the same.
        if dst_mac != pinfo.mac && !dst_mac.is_multicast() && !self.is_kernel_port(in_port) {
            return Verdict::Drop(DropReason::NotForUs);
        }
        match ethertype {
            ethernet::ethertype::IPV4 | ethernet::ethertype::IPV6 => {}
            ethernet::ethertype::ARP => return self.arp(t, st, in_port, pinfo, pkt, l2, now),
            _ => {
                return self
                    .to_kernel(st, in_port)
                    .unwrap_or(Verdict::Drop(DropReason::UnknownEthertype))
            }
        }
        let ip = match parse_ip(pkt.data(), l2, ethertype == ethernet::ethertype::IPV4) {
            Ok(ip) => ip,
            Err(r) => return Verdict::Drop(r),
        };
        if !ip.v4 && ip.proto == ip_proto::ICMPV6 {
            if let Some(v) = self.ndp(t, st, in_port, pinfo, pkt, &ip, src_mac, now) {
                return v;
            }
        }
        let ports = match l4_ports(pkt.data(), &ip) {
            Ok(p) => p,
            Err(r) => return Verdict::Drop(r),
        };
        let Some((proto, sport, dport, flags)) = ports else {
            // ICMP errors about translated flows are translated with them.
            if ip.proto == ip_proto::ICMP || ip.proto == ip_proto::ICMPV6 {
                if let Some(v) = self.icmp_error(t, st, pkt, &ip, now, handed_off) {
                    return v;
                }
            }
            // Not TCP/UDP: local (echo) or routed statelessly.
            return self.stateless(t, st, in_port, pinfo, pkt, &ip, src_mac, now);
        };
        let key = FlowKey {
            src: ip.src,
            dst: ip.dst,
            sport,
            dport,
            proto,
        };
        // Sessions live only on the worker that owns their flow, so a hit
        // needs no ownership check (nor its frontend lookup).
        let hit = self.sessions.lookup_hashed(&key, key_hash(&key));
        if hit.is_none() && !handed_off && self.n_workers > 1 {
            let owner = self.owner_for(t, &key);
            if owner != self.id {
                return Verdict::HandOff(owner);
            }
        }
        // SCTP: the CRC32c is checked on every packet, as conntrack does by
        // default (nf_conntrack_checksum=1 marks bad ones INVALID). A port
        // rewrite recomputes the CRC, so without this check a corrupted
        // packet would leave here with a valid checksum.
        if proto == Proto::Sctp
            && !SctpPacket::new_unchecked(&pkt.data()[ip.l4..ip.end]).verify_checksum()
        {
            return Verdict::Drop(DropReason::BadSctpChecksum);
        }
        if let Some((idx, dir)) = hit {
            let s = self.sessions.get(idx);
            if s.validated != self.valid.tag {
                // First packet of this session since a sweep: check its
                // backend is still there (once per session per sweep).
                let frontend = Frontend {
                    addr: s.frontend,
                    proto,
                };
                let behind = self.valid.behind(s.validated);
                if proto == Proto::Udp && !t.backend_still_valid(behind, &frontend, &s.backend) {
                    // kube-proxy's stale-UDP cleanup: flows to a removed
                    // endpoint are flushed (also when the Service has no
                    // endpoints left); the packet is handled as new.
                    self.sessions.remove(idx);
                    WorkerStats::add(&st.sessions_flushed, 1);
                    return self
                        .new_flow(t, st, in_port, pinfo, pkt, &ip, key, flags, src_mac, now);
                }
                self.sessions.set_validated(idx, self.valid.tag);
            }
            if proto == Proto::Tcp
                && dir == Dir::Original
                && flags & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN
                && matches!(
                    s.tcp,
                    crate::session::TcpState::Closed | crate::session::TcpState::Closing
                )
            {
                // A new connection reusing the tuple of a closing one: start afresh.
                self.sessions.remove(idx);
                return self.new_flow(t, st, in_port, pinfo, pkt, &ip, key, flags, src_mac, now);
            }
            if proto == Proto::Sctp
                && dir == Dir::Original
                && flags & sctp::bits::INIT != 0
                && matches!(s.sctp, SctpState::Closed | SctpState::Closing)
            {
                // A new association on the tuple of a closing one: start afresh.
                self.sessions.remove(idx);
                return self.new_flow(t, st, in_port, pinfo, pkt, &ip, key, flags, src_mac, now);
            }
            self.sessions.touch(idx, dir, flags, now);
            return match dir {
                Dir::Original => {
                    if let Some(v) =
                        self.check_mtu(t, st, pkt, &ip, &s.backend.addr, pinfo, src_mac, in_port)
                    {
                        return v;
                    }
                    WorkerStats::add(&st.nat_forward, 1);
                    nat(pkt.data_mut(), &ip, proto, s.snat, Some(s.backend));
                    self.forward(t, st, pkt, &ip, l2, now)
                }
                Dir::Reply => {
                    if let Some(v) =
                        self.check_mtu(t, st, pkt, &ip, &s.client.addr, pinfo, src_mac, in_port)
                    {
                        return v;
                    }
                    WorkerStats::add(&st.nat_reverse, 1);
                    let to_client = s.snat.map(|_| s.client);
                    nat(pkt.data_mut(), &ip, proto, Some(s.frontend), to_client);
                    self.forward(t, st, pkt, &ip, l2, now)
                }
            };
        }
        self.new_flow(t, st, in_port, pinfo, pkt, &ip, key, flags, src_mac, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_flow<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pinfo: PortInfo,
        pkt: &mut B,
        ip: &Ip,
        key: FlowKey,
        flags: u8,
        src_mac: MacAddr,
        now: u64,
    ) -> Verdict {
        let fe = t.frontend(&Frontend {
            addr: SockAddr::new(key.dst, key.dport),
            proto: key.proto,
        });
        let Some(svc_idx) = fe else {
            if let Some(v) = self.node_to_kernel(t, st, &ip.dst, in_port) {
                return v;
            }
            if t.local_port(&ip.dst).is_some() || self.is_exception_snat(&ip.dst) {
                return Verdict::Drop(DropReason::LocalUnhandled);
            }
            // Not a Service: plain routing.
            WorkerStats::add(&st.routed, 1);
            let l2 = l2_len(pkt.data());
            return self.forward(t, st, pkt, ip, l2, now);
        };
        if key.proto == Proto::Tcp && flags & tcp::RST != 0 {
            return Verdict::Drop(DropReason::OrphanRst);
        }
        if key.proto == Proto::Sctp
            && flags
                & (sctp::bits::ABORT | sctp::bits::SHUTDOWN_ACK | sctp::bits::SHUTDOWN_COMPLETE)
                != 0
        {
            // "Out of the blue" packets that end an association we do not
            // know: they must neither open a session nor be rejected.
            return Verdict::Drop(DropReason::OrphanSctp);
        }
        let Some(svc) = t.service(svc_idx) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if !svc.allows(&key.src) {
            return Verdict::Drop(DropReason::SourceRange);
        }
        let svc = t.service_for(svc, &key.src);
        let picked = match svc.affinity_timeout {
            None => svc.pick_new(&key, &mut self.rng),
            Some(timeout) => {
                // ClientIP affinity: remembered choice, else Maglev over the
                // client IP alone (the same on every core).
                let now_s = now / 1000;
                let fe = svc.frontend.addr;
                let b = self
                    .affinity
                    .get(&fe, &key.src, now_s, timeout)
                    .and_then(|k| svc.backend_by_key(k))
                    .or_else(|| svc.pick(client_hash(&key.src)));
                if let Some(b) = b {
                    self.affinity.put(&fe, &key.src, backend_key(&b), now_s);
                }
                b
            }
        };
        let Some(backend) = picked else {
            if svc.no_backends == NoBackends::Drop {
                return Verdict::Drop(DropReason::NoLocalEndpoints);
            }
            WorkerStats::add(&st.rejected, 1);
            return self.reject(pkt, ip, key, flags, pinfo, src_mac, in_port);
        };
        if let Some(v) = self.check_mtu(t, st, pkt, ip, &backend.addr, pinfo, src_mac, in_port) {
            return v;
        }
        // A client behind the kernel (a local pod, the node) reaching a
        // backend behind the kernel: the kernel would route the backend's
        // reply straight to the client, past the reverse translation (or,
        // for the node as client, see its own address arrive from outside),
        // so the flow is masqueraded to the exception SNAT address, which
        // the kernel routes back onto the exception port.
        let hairpin = self.is_kernel_port(in_port) && self.behind_kernel(t, &backend.addr);
        let snat = if hairpin || t.needs_masquerade(svc, &key.src, &backend.addr) {
            match self.snat_port(t, &key, backend) {
                Ok(s) => Some(s),
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            None
        };
        let init = self.sessions.initial_state(key.proto, flags, now);
        let mut session = Session {
            client: SockAddr::new(key.src, key.sport),
            frontend: SockAddr::new(key.dst, key.dport),
            backend,
            snat,
            proto: key.proto,
            tcp: init.tcp,
            sctp: init.sctp,
            replied: false,
            expires: init.expires,
            validated: self.valid.tag,
        };
        // The backend's node-wide connection counter (a search on creation
        // only; ending the session finds it beside the session).
        let counter = svc.counter_of(&backend);
        match self.sessions.insert_counted(session, counter) {
            Ok(_) => {}
            Err(InsertError::Full) => return Verdict::Drop(DropReason::SessionTableFull),
            Err(InsertError::Conflict) if snat.is_none() => {
                // The reply tuple (backend -> client) is taken: the same client
                // port reached the same backend through another frontend.
                // Like nf_nat's unique-tuple search, remap the client port
                // and keep the client address (the backend still sees who
                // connects: eTP Local's source preservation holds).
                match self.remap_port(t, &key, backend) {
                    Ok(s) => {
                        session.snat = Some(s);
                        if self.sessions.insert_counted(session, counter).is_err() {
                            return Verdict::Drop(DropReason::SessionConflict);
                        }
                        WorkerStats::add(&st.sessions_clash_remapped, 1);
                    }
                    Err(r) => return Verdict::Drop(r),
                }
            }
            Err(InsertError::Conflict) => return Verdict::Drop(DropReason::SessionConflict),
        }
        WorkerStats::add(&st.sessions_created, 1);
        WorkerStats::add(&st.nat_forward, 1);
        if snat.is_some() {
            WorkerStats::add(&st.sessions_masqueraded, 1);
        }
        nat(pkt.data_mut(), ip, key.proto, session.snat, Some(backend));
        let l2 = l2_len(pkt.data());
        self.forward(t, st, pkt, ip, l2, now)
    }

    /// A new source port for the client of a DNAT-only flow whose reply
    /// tuple is taken: a port of 1024..=65535 whose reply tuple is free and
    /// whose endpoint (client address, port) this worker owns, so replies
    /// are steered here like any DNAT-only flow's.
    fn remap_port(
        &self,
        t: &ServiceTable,
        key: &FlowKey,
        backend: SockAddr,
    ) -> Result<SockAddr, DropReason> {
        const FIRST: u32 = 1024;
        const LEN: u32 = 65536 - FIRST;
        let start = (flow_hash(key) >> 32) as u32 % LEN;
        for i in 0..SNAT_TRIES * u32::from(self.n_workers.max(1)) {
            let port = (FIRST + (start + i) % LEN) as u16;
            let cand = SockAddr::new(key.src, port);
            if self.client_owner(t, &cand) != self.id {
                continue;
            }
            let reply = FlowKey {
                src: backend.addr,
                dst: key.src,
                sport: backend.port,
                dport: port,
                proto: key.proto,
            };
            if self.sessions.lookup(&reply).is_none() {
                return Ok(cand);
            }
        }
        Err(DropReason::SessionConflict)
    }

    /// Picks the masquerade source for a new flow to `backend`: the node
    /// address of the egress port and a port from this worker's partition
    /// that makes the reply tuple unique (never a live tuple's).
    fn snat_port(
        &self,
        t: &ServiceTable,
        key: &FlowKey,
        backend: SockAddr,
    ) -> Result<SockAddr, DropReason> {
        let hop = t.route(&backend.addr).ok_or(DropReason::NoRoute)?;
        let addr = match self.exception {
            // Behind the kernel, which holds the node's addresses itself: the
            // exception SNAT address (routed back onto the exception port).
            Some(x) if x.kernel == hop.port => x
                .snat(backend.addr.is_v4())
                .ok_or(DropReason::NoExceptionSnat)?,
            _ => t
                .port_addr(hop.port, backend.addr.is_v4())
                .ok_or(DropReason::NoRoute)?,
        };
        let (first, len) = snat_range(self.id, self.n_workers);
        let start = (flow_hash(key) >> 32) as u32 % len as u32;
        for i in 0..SNAT_TRIES.min(len as u32) {
            let port = first + ((start + i) % len as u32) as u16;
            let reply = FlowKey {
                src: backend.addr,
                dst: addr,
                sport: backend.port,
                dport: port,
                proto: key.proto,
            };
            if self.sessions.lookup(&reply).is_none() {
                return Ok(SockAddr::new(addr, port));
            }
        }
        Err(DropReason::SnatExhausted)
    }

    /// Routes a (possibly rewritten) IP packet: TTL, next hop, L2 header.
    fn forward<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        pkt: &mut B,
        ip: &Ip,
        l2: usize,
        now: u64,
    ) -> Verdict {
        // The destination may have been rewritten: read it back.
        let dst = read_dst(pkt.data(), ip);
        if dst.is_multicast_or_broadcast() {
            return Verdict::Drop(DropReason::Multicast);
        }
        if let Some(x) = self.exception {
            if t.local_port(&dst).is_some() {
                // Translated for the node itself (the replies of the
                // kernel's own Service connections): delivered to the
                // kernel, addressed to its MAC, without a routing hop.
                let Some(k) = self.ports.get(x.kernel as usize).copied() else {
                    return Verdict::Drop(DropReason::BadPort);
                };
                let ethertype = if ip.v4 {
                    ethernet::ethertype::IPV4
                } else {
                    ethernet::ethertype::IPV6
                };
                if !set_l2(pkt, l2, k.mac, k.mac, None, ethertype) {
                    return Verdict::Drop(DropReason::Truncated);
                }
                WorkerStats::add(&st.exception_to_kernel, 1);
                return Verdict::ToKernel(x.kernel);
            }
        }
        let Some(hop) = t.route(&dst) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if !decrement_ttl(pkt.data_mut(), ip) {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        if let Some(x) = self.exception.filter(|x| x.kernel == hop.port) {
            // Behind the kernel (a local pod): the kernel routes it on. Its
            // interface carries the uplink's MAC: no neighbour to resolve.
            let Some(k) = self.ports.get(x.kernel as usize).copied() else {
                return Verdict::Drop(DropReason::BadPort);
            };
            let ethertype = if ip.v4 {
                ethernet::ethertype::IPV4
            } else {
                ethernet::ethertype::IPV6
            };
            if !set_l2(pkt, l2, k.mac, k.mac, None, ethertype) {
                return Verdict::Drop(DropReason::Truncated);
            }
            WorkerStats::add(&st.exception_to_kernel, 1);
            return Verdict::ToKernel(x.kernel);
        }
        let (mac, verdict) = match self.neighbors.resolve(&hop.addr, now) {
            Resolution::Known(m) => (m, Verdict::Tx(hop.port)),
            Resolution::Stale(m) => {
                self.solicit(hop.port, hop.addr);
                (m, Verdict::Tx(hop.port))
            }
            Resolution::Solicit => {
                self.solicit(hop.port, hop.addr);
                (
                    MacAddr([0; 6]),
                    Verdict::Hold {
                        port: hop.port,
                        addr: hop.addr,
                    },
                )
            }
            Resolution::Pending => (
                MacAddr([0; 6]),
                Verdict::Hold {
                    port: hop.port,
                    addr: hop.addr,
                },
            ),
            Resolution::Full => return Verdict::Drop(DropReason::NeighborTableFull),
        };
        let Some(out) = self.ports.get(hop.port as usize).copied() else {
            return Verdict::Drop(DropReason::BadPort);
        };
        let ethertype = if ip.v4 {
            ethernet::ethertype::IPV4
        } else {
            ethernet::ethertype::IPV6
        };
        if !set_l2(pkt, l2, mac, out.mac, out.vlan, ethertype) {
            return Verdict::Drop(DropReason::Truncated);
        }
        verdict
    }

    fn solicit(&mut self, port: u16, addr: Addr) {
        if self.n_solicits < MAX_PENDING {
            self.solicits[self.n_solicits] = (port, addr);
            self.n_solicits += 1;
        }
    }

    /// Learns the sender of a request (ARP request, neighbour
    /// solicitation): a new neighbour only when it asks for an address of
    /// ours (`for_us`), else only a refresh of one we know; shared when it
    /// changed something.
    fn learn_sender(&mut self, u: NeighborUpdate, now: u64, for_us: bool) {
        let changed = if for_us {
            self.neighbors.learn(u, now)
        } else {
            self.neighbors.refresh(u, now)
        };
        if changed {
            self.learned(u);
        }
    }

    /// Learns the neighbour an answer (ARP reply, solicited
    /// advertisement) names; shared as learned when it changed something,
    /// passed on as an answer when refused above the high-water mark.
    fn learn_answer(&mut self, u: NeighborUpdate, now: u64) {
        let refused = self.neighbors.refused();
        if self.neighbors.learn(u, now) {
            self.learned(u);
        } else if self.neighbors.refused() != refused && self.n_answers < MAX_ANSWERS {
            self.answers[self.n_answers] = u;
            self.n_answers += 1;
        }
    }

    fn learned(&mut self, u: NeighborUpdate) {
        if self.n_learned < MAX_PENDING {
            self.learned[self.n_learned] = u;
            self.n_learned += 1;
        }
    }

    /// When a packet headed for `dst` is larger than its egress port's MTU:
    /// ICMP fragmentation-needed (IPv4 with DF) / packet-too-big (IPv6) to
    /// its sender, from our address on the ingress port, quoting the packet
    /// as received — before any translation, so the sender's PMTU discovery
    /// works. IPv4 without DF: dropped and counted (we do not fragment).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn check_mtu<B: PacketBuf>(
        &self,
        t: &ServiceTable,
        st: &WorkerStats,
        pkt: &mut B,
        ip: &Ip,
        dst: &Addr,
        pinfo: PortInfo,
        src_mac: MacAddr,
        in_port: u16,
    ) -> Option<Verdict> {
        let len = ip.end - ip.l3;
        if len <= MIN_MTU {
            return None;
        }
        let mtu = self.ports.get(t.route(dst)?.port as usize)?.mtu as usize;
        if len <= mtu {
            return None;
        }
        if ip.v4 && pkt.data()[ip.l3 + 6] & 0x40 == 0 {
            return Some(Verdict::Drop(DropReason::TooBig));
        }
        let Some(from) = t.port_addr(in_port, ip.v4) else {
            return Some(Verdict::Drop(DropReason::TooBig));
        };
        let (ty, code, rest) = if ip.v4 {
            let m = (mtu as u16).to_be_bytes();
            (
                icmp::v4::DEST_UNREACHABLE,
                icmp::v4::FRAG_NEEDED,
                [0, 0, m[0], m[1]],
            )
        } else {
            (icmp::v6::PACKET_TOO_BIG, 0, (mtu as u32).to_be_bytes())
        };
        WorkerStats::add(&st.too_big_sent, 1);
        Some(icmp_error_reply(
            pkt, ip, from, ip.src, ty, code, rest, pinfo, src_mac, in_port,
        ))
    }

    /// The worker owning the sessions of client endpoint `c`: by the endpoint,
    /// except for a client on a node address (the host's own connections,
    /// through the exception port), whose replies come back to that node
    /// address and are steered by port like masqueraded ones, so its
    /// sessions live on the worker of its port's masquerade partition.
    #[inline]
    fn client_owner(&self, t: &ServiceTable, c: &SockAddr) -> u16 {
        if self.n_workers > 1 && t.local_port(&c.addr).is_some() {
            snat_owner(c.port, self.n_workers)
        } else {
            owner_of(c, self.n_workers)
        }
    }

    /// The worker owning a packet with tuple `k`: the client endpoint's
    /// worker — the source of packets to a (live or recently removed)
    /// frontend, else the destination (replies from backends); for packets to
    /// a node address (replies to masqueraded flows), the worker whose
    /// partition holds the SNAT port.
    fn owner_for(&self, t: &ServiceTable, k: &FlowKey) -> u16 {
        let fe = Frontend {
            addr: SockAddr::new(k.dst, k.dport),
            proto: k.proto,
        };
        if t.frontend(&fe).is_some() || t.is_retired(&fe) {
            self.client_owner(t, &SockAddr::new(k.src, k.sport))
        } else if t.local_port(&k.dst).is_some() || self.is_exception_snat(&k.dst) {
            snat_owner(k.dport, self.n_workers)
        } else {
            owner_of(&SockAddr::new(k.dst, k.dport), self.n_workers)
        }
    }

    /// Translates an ICMP error (destination/port unreachable, fragmentation
    /// needed / packet too big, time exceeded, parameter problem) that quotes
    /// a packet of a translated flow: the outer and the quoted inner headers
    /// are rewritten as conntrack does, so the sender of the quoted packet
    /// sees an error about its own packet (PMTU discovery works through the
    /// proxy). `None` when the packet is not such an error.
    fn icmp_error<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        pkt: &mut B,
        ip: &Ip,
        now: u64,
        handed_off: bool,
    ) -> Option<Verdict> {
        let d = pkt.data();
        let ty = *d.get(ip.l4)?;
        let is_error = if ip.v4 {
            matches!(ty, 3 | 11 | 12)
        } else {
            matches!(ty, 1..=4)
        };
        if !is_error || ip.end < ip.l4 + 8 {
            return None;
        }
        let inner = parse_ip(&d[..ip.end], ip.l4 + 8, ip.v4)
            .ok()
            .or_else(|| parse_quoted(d, ip.l4 + 8, ip.end, ip.v4))?;
        let proto = match inner.proto {
            ip_proto::TCP => Proto::Tcp,
            ip_proto::UDP => Proto::Udp,
            ip_proto::SCTP => Proto::Sctp,
            _ => return None,
        };
        if ip.end < inner.l4 + 4 {
            return None;
        }
        let isport = u16::from_be_bytes([d[inner.l4], d[inner.l4 + 1]]);
        let idport = u16::from_be_bytes([d[inner.l4 + 2], d[inner.l4 + 3]]);
        // The quoted packet went inner.src -> inner.dst; the flow's packets in
        // the other direction have the reversed tuple, which we index.
        let rkey = FlowKey {
            src: inner.dst,
            dst: inner.src,
            sport: idport,
            dport: isport,
            proto,
        };
        if !handed_off && self.n_workers > 1 {
            let owner = self.owner_for(t, &rkey);
            if owner != self.id {
                return Some(Verdict::HandOff(owner));
            }
        }
        let (idx, dir) = self.sessions.lookup(&rkey)?;
        let s = self.sessions.get(idx);
        let end = ip.end;
        let dm = pkt.data_mut();
        // (inner src, inner dst, outer src?, outer dst?) after translation.
        let (isrc, idst, osrc, odst) = match dir {
            // Quoted: client(or SNAT) -> backend, error travels to the client.
            Dir::Reply => (
                s.client,
                s.frontend,
                (ip.src == s.backend.addr).then_some(s.frontend.addr),
                s.snat.map(|_| s.client.addr),
            ),
            // Quoted: frontend -> client, error travels to the backend.
            Dir::Original => (
                s.backend,
                s.snat.unwrap_or(s.client),
                None,
                Some(s.backend.addr),
            ),
        };
        rewrite_quoted(dm, &inner, end, proto, isrc, idst);
        if let Some(a) = osrc {
            write_addr(dm, ip, false, a);
        }
        if let Some(a) = odst {
            write_addr(dm, ip, true, a);
        }
        // Outer checksums from scratch (a rare path; the message is small).
        if ip.v4 {
            let c = checksum::ipv4_header(&dm[ip.l3..ip.l4]);
            dm[ip.l3 + 10..ip.l3 + 12].copy_from_slice(&c.to_be_bytes());
            dm[ip.l4 + 2..ip.l4 + 4].fill(0);
            let c = checksum::finish(checksum::sum(&dm[ip.l4..end], 0));
            dm[ip.l4 + 2..ip.l4 + 4].copy_from_slice(&c.to_be_bytes());
        } else {
            dm[ip.l4 + 2..ip.l4 + 4].fill(0);
            let (src, dst) = (read_src(dm, ip), read_dst(dm, ip));
            let c = l4_checksum(dm, false, &src, &dst, ip_proto::ICMPV6, ip.l4, end);
            dm[ip.l4 + 2..ip.l4 + 4].copy_from_slice(&c.to_be_bytes());
        }
        WorkerStats::add(&st.icmp_errors_translated, 1);
        let l2 = l2_len(pkt.data());
        Some(self.forward(t, st, pkt, ip, l2, now))
    }

    /// ICMP and other non-port protocols: answer echo to node addresses, route the rest.
    #[allow(clippy::too_many_arguments)]
    fn stateless<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pinfo: PortInfo,
        pkt: &mut B,
        ip: &Ip,
        src_mac: MacAddr,
        now: u64,
    ) -> Verdict {
        // With an exception path the kernel answers ping and the rest.
        if let Some(v) = self.node_to_kernel(t, st, &ip.dst, in_port) {
            return v;
        }
        if self.is_exception_snat(&ip.dst) {
            // Only translated flows' answers go to it (ICMP errors: above).
            return Verdict::Drop(DropReason::LocalUnhandled);
        }
        if t.local_port(&ip.dst).is_some() {
            let echo_req = if ip.v4 {
                icmp::v4::ECHO_REQUEST
            } else {
                icmp::v6::ECHO_REQUEST
            };
            let icmp_proto = if ip.v4 {
                ip_proto::ICMP
            } else {
                ip_proto::ICMPV6
            };
            let d = pkt.data_mut();
            if ip.proto == icmp_proto
                && ip.end - ip.l4 >= 8
                && d[ip.l4] == echo_req
                && d[ip.l4 + 1] == 0
            {
                let reply = if ip.v4 {
                    icmp::v4::ECHO_REPLY
                } else {
                    icmp::v6::ECHO_REPLY
                };
                let mut m = IcmpPacket::new_unchecked(&mut d[ip.l4..ip.end]);
                let c = checksum::adjust16(
                    m.checksum(),
                    u16::from(echo_req) << 8,
                    u16::from(reply) << 8,
                );
                m.set_msg_type(reply);
                m.set_checksum(c);
                swap_addrs(d, ip);
                set_ttl(d, ip, DEFAULT_TTL);
                reply_l2(d, pinfo.mac, src_mac);
                WorkerStats::add(&st.echo_replies, 1);
                return Verdict::Tx(in_port);
            }
            return Verdict::Drop(DropReason::LocalUnhandled);
        }
        WorkerStats::add(&st.routed, 1);
        let l2 = l2_len(pkt.data());
        self.forward(t, st, pkt, ip, l2, now)
    }

    /// Answers a connection to a Service without endpoints the way kube-proxy's
    /// REJECT does: TCP RST for TCP, ICMP(v6) port unreachable for UDP and
    /// SCTP (iptables' REJECT default, `icmp-port-unreachable`).
    #[allow(clippy::too_many_arguments)]
    fn reject<B: PacketBuf>(
        &mut self,
        pkt: &mut B,
        ip: &Ip,
        key: FlowKey,
        flags: u8,
        pinfo: PortInfo,
        src_mac: MacAddr,
        in_port: u16,
    ) -> Verdict {
        if key.proto == Proto::Tcp {
            let d = pkt.data_mut();
            let (seq, ack, seg_len) = {
                let tp = TcpPacket::new_unchecked(&d[ip.l4..ip.end]);
                let plen = (ip.end - ip.l4 - tp.header_len()) as u32;
                let seg_len =
                    plen + u32::from(flags & tcp::SYN != 0) + u32::from(flags & tcp::FIN != 0);
                (tp.seq_number(), tp.ack_number(), seg_len)
            };
            let l3 = ip.l3;
            let l4 = if ip.v4 {
                if Ipv4Packet::emit_header(
                    &mut d[l3..],
                    key.dst.ipv4(),
                    key.src.ipv4(),
                    ip_proto::TCP,
                    20,
                    DEFAULT_TTL,
                )
                .is_err()
                {
                    return Verdict::Drop(DropReason::Truncated);
                }
                l3 + 20
            } else {
                if Ipv6Packet::emit_header(
                    &mut d[l3..],
                    key.dst.ipv6(),
                    key.src.ipv6(),
                    ip_proto::TCP,
                    20,
                    DEFAULT_TTL,
                )
                .is_err()
                {
                    return Verdict::Drop(DropReason::Truncated);
                }
                l3 + 40
            };
            {
                let mut tp = TcpPacket::new_unchecked(&mut d[l4..l4 + 20]);
                tp.set_src_port(key.dport);
                tp.set_dst_port(key.sport);
                tp.set_header_len(20);
                if flags & tcp::ACK != 0 {
                    tp.set_seq_number(ack);
                    tp.set_ack_number(0);
                    tp.set_flags(tcp::RST);
                } else {
                    tp.set_seq_number(0);
                    tp.set_ack_number(seq.wrapping_add(seg_len));
                    tp.set_flags(tcp::RST | tcp::ACK);
                }
                tp.set_window(0);
                tp.set_urgent(0);
                tp.set_checksum(0);
            }
            let c = l4_checksum(d, ip.v4, &key.dst, &key.src, ip_proto::TCP, l4, l4 + 20);
            TcpPacket::new_unchecked(&mut d[l4..l4 + 20]).set_checksum(c);
            reply_l2(d, pinfo.mac, src_mac);
            pkt.truncate(l4 + 20);
            return Verdict::Tx(in_port);
        }
        // UDP, SCTP: ICMP port unreachable quoting the offending packet.
        let (ty, code) = if ip.v4 {
            (icmp::v4::DEST_UNREACHABLE, icmp::v4::PORT_UNREACHABLE)
        } else {
            (icmp::v6::DEST_UNREACHABLE, icmp::v6::PORT_UNREACHABLE)
        };
        icmp_error_reply(
            pkt, ip, key.dst, key.src, ty, code, [0; 4], pinfo, src_mac, in_port,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn arp<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pinfo: PortInfo,
        pkt: &mut B,
        l2: usize,
        now: u64,
    ) -> Verdict {
        let d = pkt.data_mut();
        let (op, sha, spa, tpa) = match ArpPacket::new_checked(&d[l2..]) {
            Ok(a) => (
                a.operation(),
                a.sender_hw_addr(),
                a.sender_proto_addr(),
                a.target_proto_addr(),
            ),
            Err(e) => return Verdict::Drop(pkt_drop(e)),
        };
        let sender = Addr::from(spa);
        let target = Addr::from(tpa);
        // The kernel's own addresses are not neighbours (it asks for VIPs
        // and the exception SNAT address).
        let from_kernel = self.is_kernel_port(in_port);
        let for_us = t.owns(&target) || (from_kernel && self.is_exception_snat(&target));
        let update = NeighborUpdate {
            addr: sender,
            mac: sha,
            port: in_port,
        };
        let sender_valid = !sha.is_multicast() && spa.octets() != [0, 0, 0, 0] && !from_kernel;
        if sender_valid {
            if op == arp::operation::REPLY {
                self.learn_answer(update, now);
            } else {
                self.learn_sender(update, now, for_us);
            }
        }
        if op == arp::operation::REQUEST && for_us {
            if t.local_port(&target).is_some() {
                // The kernel answers for the node's addresses (it holds them
                // on the exception port, with the uplink's MAC).
                if let Some(v) = self.to_kernel(st, in_port) {
                    return v;
                }
            }
            let mut a = ArpPacket::new_unchecked(&mut d[l2..]);
            a.set_operation(arp::operation::REPLY);
            a.set_target_hw_addr(sha);
            a.set_target_proto_addr(spa);
            a.set_sender_hw_addr(pinfo.mac);
            a.set_sender_proto_addr(tpa);
            reply_l2(d, pinfo.mac, sha);
            pkt.truncate(l2 + 28);
            WorkerStats::add(&st.neighbor_replies, 1);
            return Verdict::Tx(in_port);
        }
        // Replies (to our solicitations or the kernel's: both learn) and
        // requests for other hosts.
        self.to_kernel(st, in_port).unwrap_or(Verdict::Consumed)
    }

    /// Neighbour discovery. Returns `None` for ICMPv6 that is not NDP.
    #[allow(clippy::too_many_arguments)]
    fn ndp<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pinfo: PortInfo,
        pkt: &mut B,
        ip: &Ip,
        src_mac: MacAddr,
        now: u64,
    ) -> Option<Verdict> {
        let d = pkt.data_mut();
        let body = &d[ip.l4..ip.end];
        if body.len() < 24 {
            return None;
        }
        let ty = body[0];
        if ty != icmp::v6::NEIGHBOR_SOLICIT && ty != icmp::v6::NEIGHBOR_ADVERT {
            return None;
        }
        // RFC 4861: hop limit must be 255 and the checksum valid.
        let hop_limit = d[ip.l3 + 7];
        if hop_limit != 255 || !checksum::verify_l4_v6(&ip.src.0, &ip.dst.0, ip_proto::ICMPV6, body)
        {
            return Some(Verdict::Drop(DropReason::Unsupported));
        }
        let Some(target) = icmp::ndp_target(body) else {
            return Some(Verdict::Drop(DropReason::Truncated));
        };
        let target = Addr::from(target);
        if ty == icmp::v6::NEIGHBOR_ADVERT {
            let mac = icmp::ndp_lladdr_option(body, 2).unwrap_or(src_mac);
            let u = NeighborUpdate {
                addr: target,
                mac,
                port: in_port,
            };
            // An answer to a solicitation (the S flag) may be another
            // worker's: passed on even when refused here.
            if body[4] & 0x40 != 0 {
                self.learn_answer(u, now);
            } else if self.neighbors.learn(u, now) {
                self.learned(u);
            }
            return Some(self.to_kernel(st, in_port).unwrap_or(Verdict::Consumed));
        }
        // Solicitation.
        let unspecified = ip.src.0 == [0; 16];
        // The kernel's own addresses are not neighbours (it asks for VIPs
        // and the exception SNAT address).
        let from_kernel = self.is_kernel_port(in_port);
        let owned = t.owns(&target) || (from_kernel && self.is_exception_snat(&target));
        if !unspecified && !from_kernel {
            if let Some(mac) = icmp::ndp_lladdr_option(body, 1) {
                let u = NeighborUpdate {
                    addr: ip.src,
                    mac,
                    port: in_port,
                };
                self.learn_sender(u, now, owned);
            }
        }
        if !owned {
            return Some(self.to_kernel(st, in_port).unwrap_or(Verdict::Consumed));
        }
        if t.local_port(&target).is_some() {
            if let Some(v) = self.to_kernel(st, in_port) {
                return Some(v);
            }
        }
        let dst = if unspecified {
            Addr::v6([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        } else {
            ip.src
        };
        // The advertisement (40-byte header + 32-byte NA with the target
        // link-layer option) replaces the solicitation, which may be shorter
        // (no options) or carry extension headers: place it right after a
        // plain IPv6 header, growing the buffer when needed.
        let l3 = ip.l3;
        let l4 = l3 + 40;
        let need = l4 + 32;
        let len = pkt.data().len();
        if len < need && !pkt.extend(need - len) {
            return Some(Verdict::Drop(DropReason::Truncated));
        }
        let d = pkt.data_mut();
        let n = icmp::emit_neighbor_advert(
            &mut d[l4..],
            target.0.into(),
            pinfo.mac,
            !unspecified,
            true,
        );
        if n == 0 {
            return Some(Verdict::Drop(DropReason::Truncated));
        }
        if Ipv6Packet::emit_header(
            &mut d[l3..],
            target.ipv6(),
            dst.ipv6(),
            ip_proto::ICMPV6,
            n,
            255,
        )
        .is_err()
        {
            return Some(Verdict::Drop(DropReason::Truncated));
        }
        // emit_header sets hop limit 255 as asked.
        let c = l4_checksum(d, false, &target, &dst, ip_proto::ICMPV6, l4, l4 + n);
        IcmpPacket::new_unchecked(&mut d[l4..l4 + n]).set_checksum(c);
        let dst_mac = if unspecified {
            MacAddr([0x33, 0x33, 0, 0, 0, 1])
        } else {
            src_mac
        };
        reply_l2(d, pinfo.mac, dst_mac);
        pkt.truncate(l4 + n);
        WorkerStats::add(&st.neighbor_replies, 1);
        Some(Verdict::Tx(in_port))
    }

    /// Writes an ARP request or neighbour solicitation for `target` out of
    /// `port` into `buf`; returns its length, or `None` when the port has no
    /// address of that family or the buffer is too small.
    pub fn build_solicit(
        &self,
        t: &ServiceTable,
        port: u16,
        target: Addr,
        buf: &mut [u8],
    ) -> Option<usize> {
        let pinfo = self.ports.get(port as usize)?;
        let v4 = target.is_v4();
        let src = t.port_addr(port, v4)?;
        if v4 {
            if buf.len() < 60 {
                return None;
            }
            let l2 = write_l2(
                buf,
                MacAddr::BROADCAST,
                pinfo.mac,
                pinfo.vlan,
                ethernet::ethertype::ARP,
            );
            ArpPacket::emit(
                &mut buf[l2..],
                arp::operation::REQUEST,
                pinfo.mac,
                src.ipv4(),
                MacAddr([0; 6]),
                target.ipv4(),
            )
            .ok()?;
            // Pad to the Ethernet minimum.
            buf[l2 + 28..60].fill(0);
            Some(60)
        } else {
            let t6 = target.0;
            let snm = [
                0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t6[13], t6[14], t6[15],
            ];
            let mac = MacAddr([0x33, 0x33, 0xff, t6[13], t6[14], t6[15]]);
            if buf.len() < 18 + 40 + 32 {
                return None;
            }
            let l2 = write_l2(buf, mac, pinfo.mac, pinfo.vlan, ethernet::ethertype::IPV6);
            let l4 = l2 + 40;
            let n = icmp::emit_neighbor_solicit(&mut buf[l4..], t6.into(), pinfo.mac);
            Ipv6Packet::emit_header(
                &mut buf[l2..],
                src.ipv6(),
                snm.into(),
                ip_proto::ICMPV6,
                n,
                255,
            )
            .ok()?;
            let c = l4_checksum(
                buf,
                false,
                &src,
                &Addr::v6(snm),
                ip_proto::ICMPV6,
                l4,
                l4 + n,
            );
            IcmpPacket::new_unchecked(&mut buf[l4..l4 + n]).set_checksum(c);
            Some(l4 + n)
        }
    }
}

fn pkt_drop(e: PktError) -> DropReason {
    match e {
        PktError::Truncated => DropReason::Truncated,
        PktError::BadVersion => DropReason::BadVersion,
        PktError::BadHeaderLen => DropReason::BadHeaderLen,
        PktError::BadTotalLen => DropReason::BadTotalLen,
        PktError::BadLength => DropReason::BadL4Len,
        PktError::TooManyExtHeaders => DropReason::TooManyExtHeaders,
        PktError::BadChunk => DropReason::BadSctpChunk,
        PktError::Unsupported | PktError::BadAddress => DropReason::Unsupported,
    }
}

/// The tuple of a frame, parsed just far enough to prefetch its session
/// (no validation; see [`Pipeline::prefetch_index`]).
#[inline]
fn quick_key(d: &[u8]) -> Option<FlowKey> {
    let l2 = l2_len(d);
    let et = u16::from_be_bytes([*d.get(l2 - 2)?, *d.get(l2 - 1)?]);
    let (src, dst, proto, l4) = match et {
        ethernet::ethertype::IPV4 => {
            let ip = d.get(l2..l2 + 20)?;
            let src = Addr::v4([ip[12], ip[13], ip[14], ip[15]]);
            let dst = Addr::v4([ip[16], ip[17], ip[18], ip[19]]);
            (src, dst, ip[9], l2 + ((ip[0] & 0x0f) as usize) * 4)
        }
        ethernet::ethertype::IPV6 => {
            let ip = d.get(l2..l2 + 40)?;
            let src = Addr::v6(ip[8..24].try_into().ok()?);
            let dst = Addr::v6(ip[24..40].try_into().ok()?);
            (src, dst, ip[6], l2 + 40)
        }
        _ => return None,
    };
    let proto = match proto {
        ip_proto::TCP => Proto::Tcp,
        ip_proto::UDP => Proto::Udp,
        ip_proto::SCTP => Proto::Sctp,
        _ => return None,
    };
    let p = d.get(l4..l4 + 4)?;
    Some(FlowKey {
        src,
        dst,
        sport: u16::from_be_bytes([p[0], p[1]]),
        dport: u16::from_be_bytes([p[2], p[3]]),
        proto,
    })
}

/// [`quick_key`]'s hash for an untagged IPv4 frame `d` (its ethertype
/// checked by the caller), without building the key: the same tuple, the
/// same [`key_hash`] ([`key_hash_v4`] of the parts); 0 where `quick_key`
/// has no key.
#[inline(always)]
fn quick_hash_v4(d: &[u8]) -> u64 {
    let Some(ip) = d.get(14..34) else {
        return 0;
    };
    let proto = ip[9];
    if !matches!(proto, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP) {
        return 0;
    }
    let l4 = 14 + usize::from(ip[0] & 0x0f) * 4;
    let Some(p) = d.get(l4..l4 + 4) else {
        return 0;
    };
    key_hash_v4(
        u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        u32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
        proto,
    )
}

/// [`quick_hash_v4`] for an untagged IPv6 frame `d` (its ethertype
/// checked by the caller): [`key_hash_v6`] of the header's bytes; 0 where
/// `quick_key` has no key.
#[inline(always)]
fn quick_hash_v6(d: &[u8]) -> u64 {
    let Some(ip) = d
        .get(14..14 + 44)
        .and_then(|b| <&[u8; 44]>::try_from(b).ok())
    else {
        return 0;
    };
    let proto = ip[6];
    if !matches!(proto, ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP) {
        return 0;
    }
    let Some(addrs) = ip.first_chunk::<40>().and_then(|h| h.last_chunk::<32>()) else {
        return 0;
    };
    key_hash_v6(
        addrs,
        u32::from_ne_bytes([ip[40], ip[41], ip[42], ip[43]]),
        proto,
    )
}

/// [`Pipeline::prefetch_index`]'s hash of anything but untagged IPv4, out
/// of its line (IPv4's instructions stay as they were).
#[inline(never)]
fn quick_hash_other(d: &[u8]) -> u64 {
    if d.get(12..14) == Some(&[0x86, 0xdd][..]) {
        quick_hash_v6(d)
    } else {
        quick_key(d).map_or(0, |k| key_hash(&k))
    }
}

#[inline]
fn l2_len(d: &[u8]) -> usize {
    if d.len() >= 14 && d[12] == 0x81 && d[13] == 0x00 {
        18
    } else {
        14
    }
}

#[inline]
fn parse_ip(d: &[u8], l2: usize, v4: bool) -> Result<Ip, DropReason> {
    let b = &d[l2..];
    if v4 {
        let p = Ipv4Packet::new_checked(b).map_err(pkt_drop)?;
        if !p.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
        let proto = p.protocol();
        if p.is_fragment()
            && (proto == ip_proto::TCP || proto == ip_proto::UDP || proto == ip_proto::SCTP)
        {
            // Fragments of TCP/UDP/SCTP packets are not reassembled: dropped and
            // counted (documented rule; ICMP fragments are routed as they are).
            return Err(DropReason::Fragment);
        }
        Ok(Ip {
            v4: true,
            l3: l2,
            l4: l2 + p.header_len(),
            end: l2 + p.total_len() as usize,
            src: Addr::v4(p.src_addr().octets()),
            dst: Addr::v4(p.dst_addr().octets()),
            proto,
        })
    } else {
        let p = Ipv6Packet::new_checked(b).map_err(pkt_drop)?;
        let ul = p.upper_layer().map_err(pkt_drop)?;
        if ul.fragment.is_some() {
            return Err(DropReason::Fragment);
        }
        Ok(Ip {
            v4: false,
            l3: l2,
            l4: l2 + ul.offset,
            end: l2 + 40 + p.payload_len() as usize,
            src: Addr::v6(p.src_addr().octets()),
            dst: Addr::v6(p.dst_addr().octets()),
            proto: ul.protocol,
        })
    }
}

/// `(proto, sport, dport, flags)` for TCP, UDP and SCTP (flags: TCP flags,
/// SCTP chunk bits, 0 for UDP); `None` for other protocols.
#[inline]
#[allow(clippy::type_complexity)]
fn l4_ports(d: &[u8], ip: &Ip) -> Result<Option<(Proto, u16, u16, u8)>, DropReason> {
    let b = &d[ip.l4.min(ip.end)..ip.end];
    match ip.proto {
        ip_proto::TCP => {
            let t = TcpPacket::new_checked(b).map_err(pkt_drop)?;
            Ok(Some((Proto::Tcp, t.src_port(), t.dst_port(), t.flags())))
        }
        ip_proto::UDP => {
            let u = UdpPacket::new_checked(b).map_err(pkt_drop)?;
            Ok(Some((Proto::Udp, u.src_port(), u.dst_port(), 0)))
        }
        ip_proto::SCTP => {
            let p = SctpPacket::new_checked(b).map_err(pkt_drop)?;
            Ok(Some((
                Proto::Sctp,
                p.src_port(),
                p.dst_port(),
                p.chunk_bits(),
            )))
        }
        _ => Ok(None),
    }
}

/// Turns the received packet, in place, into an ICMP(v6) error from `from`
/// to `to` that quotes it (as much as fits in 576 / 1280 bytes), sent back
/// out of the ingress port to the sender's MAC.
#[allow(clippy::too_many_arguments)]
fn icmp_error_reply<B: PacketBuf>(
    pkt: &mut B,
    ip: &Ip,
    from: Addr,
    to: Addr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    pinfo: PortInfo,
    src_mac: MacAddr,
    in_port: u16,
) -> Verdict {
    let (hdr, max) = if ip.v4 {
        (28, ICMP4_ERR_MAX)
    } else {
        (48, ICMP6_ERR_MAX)
    };
    let l2 = ip.l3;
    let orig_len = ip.end - ip.l3;
    if !pkt.prepend(hdr) {
        return Verdict::Drop(DropReason::NoMbuf);
    }
    let quote = orig_len.min(max - hdr);
    let d = pkt.data_mut();
    // The old L2 header now sits at [hdr, hdr + l2): move it to the front.
    d.copy_within(hdr..hdr + l2, 0);
    reply_l2(d, pinfo.mac, src_mac);
    let icmp_at = l2 + hdr - 8;
    let emitted = if ip.v4 {
        Ipv4Packet::emit_header(
            &mut d[l2..],
            from.ipv4(),
            to.ipv4(),
            ip_proto::ICMP,
            8 + quote,
            DEFAULT_TTL,
        )
    } else {
        Ipv6Packet::emit_header(
            &mut d[l2..],
            from.ipv6(),
            to.ipv6(),
            ip_proto::ICMPV6,
            8 + quote,
            DEFAULT_TTL,
        )
    };
    if emitted.is_err() {
        return Verdict::Drop(DropReason::Truncated);
    }
    d[icmp_at..icmp_at + 8].copy_from_slice(&[ty, code, 0, 0, rest[0], rest[1], rest[2], rest[3]]);
    let c = if ip.v4 {
        checksum::finish(checksum::sum(&d[icmp_at..icmp_at + 8 + quote], 0))
    } else {
        l4_checksum(
            d,
            false,
            &from,
            &to,
            ip_proto::ICMPV6,
            icmp_at,
            icmp_at + 8 + quote,
        )
    };
    IcmpPacket::new_unchecked(&mut d[icmp_at..icmp_at + 8]).set_checksum(c);
    pkt.truncate(icmp_at + 8 + quote);
    Verdict::Tx(in_port)
}

/// A quoted IP header inside an ICMP error whose lengths describe the
/// original (longer) packet: only the header itself must be present.
fn parse_quoted(d: &[u8], at: usize, end: usize, v4: bool) -> Option<Ip> {
    let b = d.get(at..end)?;
    if v4 {
        if b.len() < 20 || b[0] >> 4 != 4 {
            return None;
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        if hl < 20 || b.len() < hl {
            return None;
        }
        let a = |o: usize| Addr::v4([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Some(Ip {
            v4: true,
            l3: at,
            l4: at + hl,
            end,
            src: a(12),
            dst: a(16),
            proto: b[9],
        })
    } else {
        if b.len() < 40 || b[0] >> 4 != 6 {
            return None;
        }
        let mut s = [0u8; 16];
        let mut t = [0u8; 16];
        s.copy_from_slice(&b[8..24]);
        t.copy_from_slice(&b[24..40]);
        // Extension headers in quoted packets are not walked.
        Some(Ip {
            v4: false,
            l3: at,
            l4: at + 40,
            end,
            src: Addr::v6(s),
            dst: Addr::v6(t),
            proto: b[6],
        })
    }
}

/// Writes the source (`dst == false`) or destination address of a header.
#[inline]
fn write_addr(d: &mut [u8], ip: &Ip, dst: bool, a: Addr) {
    if ip.v4 {
        let o = ip.l3 + if dst { 16 } else { 12 };
        d[o..o + 4].copy_from_slice(&a.v4_octets());
    } else {
        let o = ip.l3 + if dst { 24 } else { 8 };
        d[o..o + 16].copy_from_slice(&a.0);
    }
}

/// Rewrites the quoted packet of an ICMP error to `src` -> `dst`, keeping its
/// IPv4 header checksum and (when quoted) its TCP/UDP checksum valid. A
/// quoted SCTP packet's CRC32c is recomputed only when the whole packet is
/// quoted (a CRC over a truncated packet cannot be updated; conntrack does
/// the same), and only when a port changed (no pseudo-header: addresses do
/// not enter it).
fn rewrite_quoted(
    d: &mut [u8],
    inner: &Ip,
    end: usize,
    proto: Proto,
    src: SockAddr,
    dst: SockAddr,
) {
    let old_src = inner.src;
    let old_dst = inner.dst;
    let old_sport = u16::from_be_bytes([d[inner.l4], d[inner.l4 + 1]]);
    let old_dport = u16::from_be_bytes([d[inner.l4 + 2], d[inner.l4 + 3]]);
    write_addr(d, inner, false, src.addr);
    write_addr(d, inner, true, dst.addr);
    d[inner.l4..inner.l4 + 2].copy_from_slice(&src.port.to_be_bytes());
    d[inner.l4 + 2..inner.l4 + 4].copy_from_slice(&dst.port.to_be_bytes());
    if inner.v4 {
        let c = checksum::ipv4_header(&d[inner.l3..inner.l4]);
        d[inner.l3 + 10..inner.l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    if proto == Proto::Sctp {
        // The quoted packet's own length says where it ends.
        let full = if inner.v4 {
            inner.l3 + usize::from(u16::from_be_bytes([d[inner.l3 + 2], d[inner.l3 + 3]]))
        } else {
            inner.l3 + 40 + usize::from(u16::from_be_bytes([d[inner.l3 + 4], d[inner.l3 + 5]]))
        };
        let ports_changed = old_sport != src.port || old_dport != dst.port;
        if ports_changed && full <= end && full >= inner.l4 + sctp::HEADER_LEN {
            sctp::fill_checksum(&mut d[inner.l4..full]);
        }
        return;
    }
    let at = inner.l4 + if proto == Proto::Tcp { 16 } else { 6 };
    if at + 2 <= end {
        let udp = proto == Proto::Udp;
        let adj = |c: u16, o: &[u8], n: &[u8]| {
            if udp {
                checksum::adjust_udp(c, o, n)
            } else {
                checksum::adjust(c, o, n)
            }
        };
        let mut c = u16::from_be_bytes([d[at], d[at + 1]]);
        c = adj(c, old_src.wire(), src.addr.wire());
        c = adj(c, old_dst.wire(), dst.addr.wire());
        c = adj(c, &old_sport.to_be_bytes(), &src.port.to_be_bytes());
        c = adj(c, &old_dport.to_be_bytes(), &dst.port.to_be_bytes());
        d[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

#[inline]
fn read_src(d: &[u8], ip: &Ip) -> Addr {
    if ip.v4 {
        let o = ip.l3 + 12;
        Addr::v4([d[o], d[o + 1], d[o + 2], d[o + 3]])
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&d[ip.l3 + 8..ip.l3 + 24]);
        Addr::v6(a)
    }
}

#[inline]
fn read_dst(d: &[u8], ip: &Ip) -> Addr {
    if ip.v4 {
        let o = ip.l3 + 16;
        Addr::v4([d[o], d[o + 1], d[o + 2], d[o + 3]])
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&d[ip.l3 + 24..ip.l3 + 40]);
        Addr::v6(a)
    }
}

/// Offset of the L4 checksum field for TCP/UDP.
#[inline]
fn l4_csum_at(ip: &Ip, proto: Proto) -> usize {
    match proto {
        Proto::Tcp => ip.l4 + 16,
        _ => ip.l4 + 6,
    }
}

/// Rewrites one address and port; TCP/UDP checksums are adjusted
/// incrementally, an SCTP CRC32c is left to the caller ([`nat`]). Returns
/// whether the port changed.
#[inline]
fn rewrite_addr_port(d: &mut [u8], ip: &Ip, proto: Proto, new: SockAddr, is_dst: bool) -> bool {
    let port_at = if is_dst { ip.l4 + 2 } else { ip.l4 };
    let old_port = u16::from_be_bytes([d[port_at], d[port_at + 1]]);
    let old = write_addr_adjusting_ip(d, ip, new.addr, is_dst);
    d[port_at..port_at + 2].copy_from_slice(&new.port.to_be_bytes());
    if proto != Proto::Sctp {
        // SCTP has no pseudo-header; TCP/UDP checksums cover both changes.
        let csum_at = l4_csum_at(ip, proto);
        let udp = proto == Proto::Udp;
        let adj = |c: u16, o: &[u8], n: &[u8]| {
            if udp {
                checksum::adjust_udp(c, o, n)
            } else {
                checksum::adjust(c, o, n)
            }
        };
        let mut l4c = u16::from_be_bytes([d[csum_at], d[csum_at + 1]]);
        l4c = if ip.v4 {
            adj(l4c, &old.v4_octets(), &new.addr.v4_octets())
        } else {
            adj(l4c, &old.0, &new.addr.0)
        };
        l4c = if udp {
            checksum::adjust_udp16(l4c, old_port, new.port)
        } else {
            checksum::adjust16(l4c, old_port, new.port)
        };
        d[csum_at..csum_at + 2].copy_from_slice(&l4c.to_be_bytes());
    }
    old_port != new.port
}

/// Writes a source or destination address, adjusting the IPv4 header
/// checksum incrementally (IPv6 has none); returns the old address.
#[inline]
fn write_addr_adjusting_ip(d: &mut [u8], ip: &Ip, new: Addr, is_dst: bool) -> Addr {
    let old = if is_dst {
        read_dst(d, ip)
    } else {
        read_src(d, ip)
    };
    write_addr(d, ip, is_dst, new);
    if ip.v4 {
        let ipc = u16::from_be_bytes([d[ip.l3 + 10], d[ip.l3 + 11]]);
        let ipc = checksum::adjust(ipc, &old.v4_octets(), &new.v4_octets());
        d[ip.l3 + 10..ip.l3 + 12].copy_from_slice(&ipc.to_be_bytes());
    }
    old
}

/// Translates a packet: the source becomes `src` and/or the destination
/// `dst` (address and port). TCP/UDP checksums are updated incrementally; an
/// SCTP packet's CRC32c is recomputed over the packet once, and only when a
/// port changed — SCTP has no pseudo-header, so an address-only rewrite
/// leaves its CRC valid.
#[inline]
fn nat(d: &mut [u8], ip: &Ip, proto: Proto, src: Option<SockAddr>, dst: Option<SockAddr>) {
    let mut ports_changed = false;
    if let Some(n) = dst {
        ports_changed |= rewrite_addr_port(d, ip, proto, n, true);
    }
    if let Some(n) = src {
        ports_changed |= rewrite_addr_port(d, ip, proto, n, false);
    }
    if proto == Proto::Sctp && ports_changed {
        sctp::fill_checksum(&mut d[ip.l4..ip.end]);
    }
}

/// Decrements TTL / hop limit; false when it would reach zero.
#[inline]
fn decrement_ttl(d: &mut [u8], ip: &Ip) -> bool {
    if ip.v4 {
        let ttl = d[ip.l3 + 8];
        if ttl <= 1 {
            return false;
        }
        let old = u16::from_be_bytes([ttl, d[ip.l3 + 9]]);
        d[ip.l3 + 8] = ttl - 1;
        let new = u16::from_be_bytes([ttl - 1, d[ip.l3 + 9]]);
        let c = checksum::adjust16(u16::from_be_bytes([d[ip.l3 + 10], d[ip.l3 + 11]]), old, new);
        d[ip.l3 + 10..ip.l3 + 12].copy_from_slice(&c.to_be_bytes());
        true
    } else {
        let h = d[ip.l3 + 7];
        if h <= 1 {
            return false;
        }
        d[ip.l3 + 7] = h - 1;
        true
    }
}

fn set_ttl(d: &mut [u8], ip: &Ip, ttl: u8) {
    if ip.v4 {
        let old = u16::from_be_bytes([d[ip.l3 + 8], d[ip.l3 + 9]]);
        d[ip.l3 + 8] = ttl;
        let new = u16::from_be_bytes([ttl, d[ip.l3 + 9]]);
        let c = checksum::adjust16(u16::from_be_bytes([d[ip.l3 + 10], d[ip.l3 + 11]]), old, new);
        d[ip.l3 + 10..ip.l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        d[ip.l3 + 7] = ttl;
    }
}

/// Swaps source and destination addresses (checksums are unaffected).
fn swap_addrs(d: &mut [u8], ip: &Ip) {
    let (s, n) = if ip.v4 {
        (ip.l3 + 12, 4)
    } else {
        (ip.l3 + 8, 16)
    };
    for i in 0..n {
        d.swap(s + i, s + n + i);
    }
}

/// Addresses a reply back to the sender on the same port (VLAN tag kept).
#[inline]
fn reply_l2(d: &mut [u8], our: MacAddr, to: MacAddr) {
    d[0..6].copy_from_slice(&to.0);
    d[6..12].copy_from_slice(&our.0);
}

/// Full L4 checksum over `d[from..to]` (checksum field must be zero).
fn l4_checksum(
    d: &[u8],
    v4: bool,
    src: &Addr,
    dst: &Addr,
    proto: u8,
    from: usize,
    to: usize,
) -> u16 {
    if v4 {
        checksum::l4_v4(src.v4_octets(), dst.v4_octets(), proto, &d[from..to])
    } else {
        checksum::l4_v6(&src.0, &dst.0, proto, &d[from..to])
    }
}

/// Writes an Ethernet header (with an 802.1Q tag when `vlan` is set); returns its length.
fn write_l2(
    buf: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    vlan: Option<u16>,
    ethertype: u16,
) -> usize {
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    match vlan {
        Some(v) => {
            buf[12..14].copy_from_slice(&ethernet::ethertype::VLAN.to_be_bytes());
            buf[14..16].copy_from_slice(&(v & 0x0fff).to_be_bytes());
            buf[16..18].copy_from_slice(&ethertype.to_be_bytes());
            18
        }
        None => {
            buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
            14
        }
    }
}

/// Rewrites the L2 header of a packet whose current header is `cur` bytes,
/// growing or shrinking it when the VLAN tagging changes.
#[inline]
fn set_l2<B: PacketBuf>(
    pkt: &mut B,
    cur: usize,
    dst: MacAddr,
    src: MacAddr,
    vlan: Option<u16>,
    ethertype: u16,
) -> bool {
    let want = if vlan.is_some() { 18 } else { 14 };
    if want > cur {
        if !pkt.prepend(want - cur) {
            return false;
        }
    } else if want < cur && !pkt.adj(cur - want) {
        return false;
    }
    write_l2(pkt.data_mut(), dst, src, vlan, ethertype);
    true
}

mod fast;
pub use fast::TableMemory;
#[cfg(test)]
mod tests;
