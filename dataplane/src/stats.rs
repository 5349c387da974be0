//! Per-worker counters, written by one worker and read by the admin server.
//!
//! Each worker owns one cache-line-aligned [`WorkerStats`]; it is the only
//! writer, so updates are plain relaxed load+store (no locked instructions).
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! reasons {
    ($($(#[$m:meta])* $v:ident => $s:literal,)*) => {
        /// Why the dataplane dropped a packet.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$m])* $v,)* }
        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();
            /// The Prometheus label value.
            pub const fn as_str(self) -> &'static str {
                match self { $(DropReason::$v => $s,)* }
            }
        }
    };
}

reasons! {
    /// A header was cut short.
    Truncated => "truncated",
    /// IP version field is wrong.
    BadVersion => "bad_version",
    /// IPv4 IHL / TCP data offset / IPv6 extension header length is wrong.
    BadHeaderLen => "bad_header_len",
    /// IPv4 total length or IPv6 payload length is wrong.
    BadTotalLen => "bad_total_len",
    /// UDP length field is wrong.
    BadL4Len => "bad_l4_len",
    /// A header we do not handle (ARP hardware type, ...).
    Unsupported => "unsupported",
    /// Too many IPv6 extension headers.
    TooManyExtHeaders => "too_many_ext_headers",
    /// EtherType we do not handle.
    UnknownEthertype => "unknown_ethertype",
    /// IPv4 header checksum is wrong.
    BadChecksum => "bad_checksum",
    /// A VLAN tag that does not match the port.
    VlanMismatch => "vlan_mismatch",
    /// Frame addressed to another MAC.
    NotForUs => "not_for_us",
    /// TTL or hop limit ran out.
    TtlExceeded => "ttl_exceeded",
    /// A multicast or broadcast IP destination (not routed).
    Multicast => "multicast",
    /// No route to the destination.
    NoRoute => "no_route",
    /// Next hop MAC did not resolve in time, or too many packets waited for it.
    NeighborMiss => "neighbor_miss",
    /// The next hop is unknown and the neighbour cache is full of live
    /// entries (`workers.neighbors`).
    NeighborTableFull => "neighbor_table_full",
    /// Larger than the egress port's MTU and not fragmentable (IPv4 without
    /// DF is not fragmented either; an ICMP "too big" is sent when possible).
    TooBig => "too_big",
    /// A client outside the Service's `loadBalancerSourceRanges`.
    SourceRange => "source_range",
    /// A Service with endpoints, none on this node, reached through a
    /// frontend whose traffic policy is `Local` (kube-proxy drops these).
    NoLocalEndpoints => "no_local_endpoints",
    /// No free masquerade port in this worker's partition.
    SnatExhausted => "snat_exhausted",
    /// The session table is full.
    SessionTableFull => "session_table_full",
    /// The reply tuple is already used by another session.
    SessionConflict => "session_conflict",
    /// A non-initial fragment with no way to find its flow.
    Fragment => "fragment",
    /// A TCP RST that matches no session.
    OrphanRst => "orphan_rst",
    /// An SCTP packet with an invalid CRC32c (checked as conntrack does by
    /// default, `nf_conntrack_checksum=1`).
    BadSctpChecksum => "bad_sctp_checksum",
    /// An SCTP packet without chunks, or with a chunk length below 4 or past the packet.
    BadSctpChunk => "bad_sctp_chunk",
    /// An SCTP ABORT / SHUTDOWN ACK / SHUTDOWN COMPLETE that matches no
    /// session ("out of the blue"; it must not open one).
    OrphanSctp => "orphan_sctp",
    /// Hand-off ring to the owning worker is full.
    HandoffFull => "handoff_full",
    /// The transmit queue did not take the packet.
    TxFull => "tx_full",
    /// No mbuf for a generated packet.
    NoMbuf => "no_mbuf",
    /// A multi-segment mbuf (jumbo/scattered) we do not handle.
    MultiSegment => "multi_segment",
    /// Addressed to us but nothing answers it (protocol/port).
    LocalUnhandled => "local_unhandled",
    /// A frame that arrived on a port that is not configured.
    BadPort => "bad_port",
    /// A flow between two endpoints behind the host kernel (a local pod or
    /// the node reaching a local pod through a Service) needs the exception
    /// SNAT address of its family, and none is configured.
    NoExceptionSnat => "no_exception_snat",
}

/// Drop counters, indexed by [`DropReason`].
#[derive(Debug)]
pub struct Drops(pub [AtomicU64; DropReason::COUNT]);

impl Default for Drops {
    fn default() -> Self {
        Drops(core::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl core::ops::Deref for Drops {
    type Target = [AtomicU64; DropReason::COUNT];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Packets received from ports.
    pub rx_packets: AtomicU64,
    /// Bytes received from ports.
    pub rx_bytes: AtomicU64,
    /// Packets transmitted.
    pub tx_packets: AtomicU64,
    /// Bytes transmitted.
    pub tx_bytes: AtomicU64,
    /// Packets handed to another worker.
    pub handoff_out: AtomicU64,
    /// Packets received from other workers.
    pub handoff_in: AtomicU64,
    /// Sessions created.
    pub sessions_created: AtomicU64,
    /// Sessions removed by expiry.
    pub sessions_expired: AtomicU64,
    /// New sessions that were masqueraded (SNAT to a node address).
    pub sessions_masqueraded: AtomicU64,
    /// New DNAT-only sessions whose client port was remapped to resolve a
    /// reply-tuple clash (the client address is kept).
    pub sessions_clash_remapped: AtomicU64,
    /// UDP sessions flushed because their backend was removed.
    pub sessions_flushed: AtomicU64,
    /// Table changes that removed backends (new flush epochs) after which
    /// this worker's sessions revalidated their backends on their next
    /// packet (some session might use a removed one).
    pub flush_epochs_swept: AtomicU64,
    /// Such changes carried over without revalidation: no UDP session of
    /// this worker used a removed backend.
    pub flush_epochs_carried: AtomicU64,
    /// Sessions live now.
    pub sessions_active: AtomicU64,
    /// Neighbour cache entries now (all states).
    pub neighbors_active: AtomicU64,
    /// Unsolicited neighbours not learned: the cache was above its
    /// high-water mark (an ARP/ND flood from many senders).
    pub neighbors_refused: AtomicU64,
    /// Packets translated in the original direction (client → backend).
    pub nat_forward: AtomicU64,
    /// Packets translated in the reply direction (backend → client).
    pub nat_reverse: AtomicU64,
    /// Packets of established IPv4/IPv6 TCP/UDP sessions handled by the fast path
    /// (a subset of `nat_forward` + `nat_reverse`).
    pub fast_path: AtomicU64,
    /// ICMP errors about translated flows, translated and forwarded.
    pub icmp_errors_translated: AtomicU64,
    /// ICMP fragmentation-needed / packet-too-big sent for oversized packets.
    pub too_big_sent: AtomicU64,
    /// Connections rejected because their Service has no endpoints.
    pub rejected: AtomicU64,
    /// Packets routed without translation.
    pub routed: AtomicU64,
    /// ARP / neighbour-discovery packets answered.
    pub neighbor_replies: AtomicU64,
    /// ARP / neighbour solicitations sent.
    pub neighbor_solicits: AtomicU64,
    /// ICMP echo requests answered.
    pub echo_replies: AtomicU64,
    /// Frames from the uplink given to the host kernel (exception port).
    pub exception_to_kernel: AtomicU64,
    /// Frames from the host kernel (exception port) sent out of the uplink.
    pub exception_from_kernel: AtomicU64,
    /// Version of the table this worker uses now.
    pub table_version: AtomicU64,
    /// Poll-loop iterations (liveness).
    pub loops: AtomicU64,
    /// TSC cycles spent in poll-loop iterations that had packets to handle
    /// (rx, hand-off, processing, tx flush, expiry of that iteration).
    pub busy_cycles: AtomicU64,
    /// TSC cycles spent in iterations that found no packet.
    pub idle_cycles: AtomicU64,
    /// The TSC frequency the cycle counters count in (Hz).
    pub tsc_hz: AtomicU64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: Drops,
}

impl WorkerStats {
    /// Adds `n` to a counter this worker owns.
    #[inline(always)]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
    /// Counts one drop.
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        Self::add(&self.drops[r as usize], 1);
    }
    /// Reads a drop counter.
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }
    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_labels() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn counters_add() {
        let s = WorkerStats::default();
        s.count_drop(DropReason::NoRoute);
        s.count_drop(DropReason::NoRoute);
        WorkerStats::add(&s.rx_packets, 5);
        assert_eq!(s.drops_for(DropReason::NoRoute), 2);
        assert_eq!(s.total_drops(), 2);
        assert_eq!(s.rx_packets.load(Relaxed), 5);
        assert_eq!(core::mem::align_of::<WorkerStats>(), 64);
    }
}
