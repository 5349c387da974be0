//! The established-flow fast path.
//!
//! Most packets a proxy sees belong to an established TCP/UDP session over
//! IPv4 or IPv6 on an untagged port. [`Pipeline::fast_v4`] handles exactly
//! those (IPv6 in [`Pipeline::fast_v6`], which it calls when the ethertype
//! is not IPv4's: IPv4 packets pay nothing for it), at
//! fixed offsets and with one route lookup: parse, session hit (revalidated
//! against a new table as the general path does), state touch,
//! DNAT/SNAT or reverse rewrite with one incremental checksum update per
//! checksum (the same bytes as the general path's one-change-at-a-time
//! helpers), TTL / hop limit, L2 rewrite; the next hop (route + fresh
//! neighbour) comes from a cache per family ([`EgressCache`]). Anything
//! else — IP options,
//! fragments, IPv6 extension headers, TCP SYN/FIN/RST, a bad IPv4 header checksum (not checked
//! again when the NIC's receive offload reported it good), an IPv6 UDP
//! datagram without a checksum (0), a TTL or hop limit that expires here,
//! a UDP session whose backend a new table
//! removed, a packet over the egress MTU, a neighbour that is not fresh, VLAN
//! tags, SCTP, a translation that would mix IPv4 and IPv6 (IPv4-mapped
//! addresses in an IPv6 header), malformed headers — returns `None` before any side
//! effect and the general path in [`Pipeline::process`] takes the packet
//! from the start. The differential test below holds the two paths to the
//! same verdicts, bytes and counters, over IPv4 and IPv6.
use super::*;
use core::num::NonZeroU64;

impl Pipeline {
    /// See the module docs. `None`: not handled, nothing changed.
    /// `candidate`: the burst pre-pass's, if one ran (see
    /// [`Pipeline::process_hinted`]).
    #[inline(always)]
    pub(super) fn fast_v4<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pkt: &mut B,
        now: u64,
        candidate: Option<u32>,
    ) -> Option<Verdict> {
        let pinfo = self.ports.get(in_port as usize)?;
        if pinfo.vlan.is_some() {
            return None;
        }
        let d = pkt.data();
        if d.len() < 14 + 28 || d[0..6] != pinfo.mac.0 || d[12..14] != [0x08, 0x00] {
            return None;
        }
        let ip = &d[14..];
        if ip[0] != 0x45 {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if total < 28 || total > ip.len() {
            return None;
        }
        // Fragments (MF or an offset) and TTLs that would expire here.
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || ip[8] <= 1 {
            return None;
        }
        // The header checksum, unless the NIC checked it (a `Bad` or
        // unknown verdict: checked here, and the general path drops it).
        if pkt.rx_ip_checksum() != RxChecksum::Good
            && !ip.first_chunk::<20>().is_some_and(checksum::ipv4_header_ok)
        {
            return None;
        }
        let l4 = &ip[20..total];
        let proto = l4_of(ip[9], l4, false)?;
        let key = FlowKey {
            src: Addr::v4([ip[12], ip[13], ip[14], ip[15]]),
            dst: Addr::v4([ip[16], ip[17], ip[18], ip[19]]),
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
            proto,
        };
        // Without a pre-pass: the tuple's recent-lookup hash, from the
        // header's address words and the key's ports.
        let (s4, d4) = (
            u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
            u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        );
        let recent = match candidate {
            Some(_) => 0,
            None => recent_v4(
                s4,
                d4,
                u32::from(key.sport) << 16 | u32::from(key.dport),
                proto as u8,
            ),
        };
        // On a miss in the recent-lookup cache: hashed from the header's
        // words, as the pre-pass does.
        let ports = u32::from_ne_bytes([l4[0], l4[1], l4[2], l4[3]]);
        let hash = HashV4(s4, d4, ports, proto as u8);
        // Only IPv4 to IPv4 (`Ep4::of` refuses anything else), never
        // multicast or broadcast.
        let hit = self.fast_hit(t, &key, candidate, recent, hash, Ep4::of)?;
        let (new_src, new_dst) = (hit.new_src, hit.new_dst);
        let to = new_dst.map_or([ip[16], ip[17], ip[18], ip[19]], |n| n.addr.to_ne_bytes());
        if to[0] >= 224 {
            return None;
        }
        let hop = self.egress_v4(t, u32::from_ne_bytes(to), now)?;
        if total > MIN_MTU && total > usize::from(hop.mtu()) {
            return None;
        }
        // Committed: from here on the packet is translated and sent.
        self.fast_commit(st, hit, now);
        let d = pkt.data_mut();
        rewrite_v4(d, proto == Proto::Udp, new_src, new_dst);
        hop.write_l2(d);
        Some(Verdict::Tx(hop.port()))
    }
}

impl Pipeline {
    /// [`Self::fast_v4`]'s contract for IPv6 (see the module docs): an
    /// untagged frame to our MAC with the IPv6 ethertype, no extension
    /// header (TCP/UDP right after the fixed header), the payload length
    /// within the frame, a hop limit that does not expire here, TCP
    /// without SYN/FIN/RST, UDP with a checksum (0 is invalid in IPv6; the
    /// general path passes it on as it is) and a sane length. Inlined into
    /// `fast_v6_or_general`, which [`Pipeline::process_hinted`] calls out
    /// of line once [`Self::fast_v4`] passed on an IPv6 frame.
    #[inline(always)]
    pub(super) fn fast_v6<B: PacketBuf>(
        &mut self,
        t: &ServiceTable,
        st: &WorkerStats,
        in_port: u16,
        pkt: &mut B,
        now: u64,
        candidate: Option<u32>,
    ) -> Option<Verdict> {
        let pinfo = self.ports.get(in_port as usize)?;
        if pinfo.vlan.is_some() {
            return None;
        }
        let d = pkt.data();
        if d.get(0..6)? != pinfo.mac.0 || d.get(12..14)? != [0x86, 0xdd] {
            return None;
        }
        let ip = d.get(14..14 + 48)?;
        if ip[0] >> 4 != 6 || ip[7] <= 1 {
            return None;
        }
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let total = 40 + plen;
        if plen < 8 {
            return None;
        }
        let l4 = d.get(14 + 40..14 + total)?;
        // Extension headers (any other next header) are not taken.
        let proto = l4_of(ip[6], l4, true)?;
        let mut src = [0u8; 16];
        src.copy_from_slice(&ip[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&d[14 + 24..14 + 40]);
        let key = FlowKey {
            src: Addr::v6(src),
            dst: Addr::v6(dst),
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
            proto,
        };
        let recent = match candidate {
            Some(_) => 0,
            None => recent_v6(
                ip[8..40].try_into().ok()?,
                u32::from(key.sport) << 16 | u32::from(key.dport),
                ip[6],
            ),
        };
        // Only IPv6 to IPv6 (IPv4 is the general path's business: `ep6`
        // refuses an IPv4 endpoint in the translation, `to.is_v4()` an
        // IPv4-mapped destination the header carries untranslated), and
        // never multicast.
        let hit = self.fast_hit(t, &key, candidate, recent, HashOf(&key), Ep6::of)?;
        let (new_src, new_dst) = (hit.new_src, hit.new_dst);
        let to = new_dst.map_or(u128::from_ne_bytes(dst), |n| n.addr);
        if to & V4_MAPPED_MASK == V4_MAPPED || to & MULTICAST_MASK == MULTICAST_MASK {
            return None;
        }
        let hop = self.egress6_for(t, to, now)?;
        if total > MIN_MTU && total > usize::from(hop.mtu()) {
            return None;
        }
        // Committed: from here on the packet is translated and sent.
        self.fast_commit(st, hit, now);
        let d = pkt.data_mut();
        rewrite_v6(d, proto == Proto::Udp, new_src, new_dst);
        hop.write_l2(d);
        Some(Verdict::Tx(hop.port()))
    }
}

/// The transport header checks both families share: TCP without
/// SYN/FIN/RST and a sane header length, or UDP with a sane length (and,
/// for IPv6, a checksum: 0 is invalid there and left to the general path).
/// The protocol, or `None` for anything else.
#[inline(always)]
fn l4_of(next: u8, l4: &[u8], v6: bool) -> Option<Proto> {
    match next {
        ip_proto::TCP => {
            if l4.len() < 20 {
                return None;
            }
            let hl = usize::from(l4[12] >> 4) * 4;
            if hl < 20 || hl > l4.len() || l4[13] & (tcp::SYN | tcp::FIN | tcp::RST) != 0 {
                return None;
            }
            Some(Proto::Tcp)
        }
        ip_proto::UDP => {
            let ul = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if ul < 8 || ul > l4.len() || (v6 && l4[6..8] == [0, 0]) {
                return None;
            }
            Some(Proto::Udp)
        }
        _ => None,
    }
}

/// How the fast path computes a tuple's [`key_hash`] when it needs it
/// (a miss in the recent-lookup cache): a trait rather than a closure,
/// which LLVM left out of line there (~40 instructions more for each new
/// flow's first packet in callgrind).
trait TupleHash {
    fn hash(self) -> u64;
}

/// An IPv4 tuple's parts as [`key_hash_v4`] takes them.
struct HashV4(u32, u32, u32, u8);

impl TupleHash for HashV4 {
    #[inline(always)]
    fn hash(self) -> u64 {
        key_hash_v4(self.0, self.1, self.2, self.3)
    }
}

/// Any tuple, through [`key_hash`].
struct HashOf<'a>(&'a FlowKey);

impl TupleHash for HashOf<'_> {
    #[inline(always)]
    fn hash(self) -> u64 {
        key_hash(self.0)
    }
}

/// A fast-path session hit ([`Pipeline::fast_hit`]), its translation's
/// endpoints as the family's fast path wants them (`E`: [`Ep4`] or
/// [`Ep6`]).
#[derive(Clone, Copy)]
struct Hit<E> {
    idx: u32,
    dir: Dir,
    /// The session was validated before the worker's last sweep (`tag` is the current one).
    revalidate: bool,
    tag: u16,
    /// The translation: new source and destination, if they change.
    new_src: Option<E>,
    new_dst: Option<E>,
}

/// An IPv4 endpoint as [`rewrite_v4`] writes it: the address's four
/// octets and the port's two wire bytes, each read native-endian (12 bytes
/// in registers instead of two 18-byte [`SockAddr`]s on the stack).
#[derive(Clone, Copy)]
struct Ep4 {
    addr: u32,
    port: u16,
}

impl Ep4 {
    /// `e` for the IPv4 fast path; `None` for an IPv6 endpoint.
    #[inline(always)]
    fn of(e: &SockAddr) -> Option<Ep4> {
        e.addr.is_v4().then(|| Ep4 {
            addr: u32::from_ne_bytes(e.addr.v4_octets()),
            port: e.port.to_be(),
        })
    }
}

/// An IPv6 endpoint as [`rewrite_v6`] writes it: the address's 16 bytes
/// read native-endian as one `u128` and the port's two wire bytes read
/// native-endian (in registers through the next-hop lookup and the
/// rewrite, instead of an 18-byte [`SockAddr`] copied through the stack:
/// `perf` put about a third of the IPv6 fast path's samples on the loads
/// after those copies, which the next-hop lookup waited for).
#[derive(Clone, Copy)]
struct Ep6 {
    addr: u128,
    port: u16,
}

impl Ep6 {
    /// `e` for the IPv6 fast path; `None` for an IPv4 (IPv4-mapped) endpoint.
    #[inline(always)]
    fn of(e: &SockAddr) -> Option<Ep6> {
        (!e.addr.is_v4()).then(|| Ep6 {
            addr: u128::from_ne_bytes(e.addr.0),
            port: e.port.to_be(),
        })
    }
}

/// An IPv6 address read as [`Ep6::addr`] is IPv4-mapped (`::ffff:0:0/96`,
/// [`Addr::is_v4`]) when its bits under `V4_MAPPED_MASK` are `V4_MAPPED`,
/// and multicast when those under `MULTICAST_MASK` (the first byte) are
/// all set.
const V4_MAPPED_MASK: u128 = u128::from_ne_bytes([
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
]);
const V4_MAPPED: u128 = u128::from_ne_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
const MULTICAST_MASK: u128 =
    u128::from_ne_bytes([0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

impl Pipeline {
    /// The session of `key` for either family: with a pre-pass
    /// (`candidate` is `Some`), its candidate if that is this tuple's
    /// session, else `None` (see [`Pipeline::process_hinted`]); without,
    /// through the recent-lookup cache, `recent` the tuple's recent-lookup
    /// hash, and on a miss the index with `hash`'s [`key_hash`]
    /// ([`SessionTable::recent`]; both unused with a pre-pass). `None` also when (UDP, first
    /// packet since a table change) the session's backend is gone — as on
    /// the general path, which then flushes it; TCP keeps its backend.
    /// Checked here so that a publication does not send every flow through
    /// the general path. `ep` gives the translation's endpoints in the
    /// caller's form, `None` (not taken) for one of the other family. No
    /// side effect.
    #[inline(always)]
    fn fast_hit<E: Copy>(
        &self,
        t: &ServiceTable,
        key: &FlowKey,
        candidate: Option<u32>,
        recent: u64,
        hash: impl TupleHash,
        ep: impl Fn(&SockAddr) -> Option<E>,
    ) -> Option<Hit<E>> {
        let (idx, dir) = match candidate {
            Some(c) => self.sessions.confirm_candidate(c, key)?,
            None => match self.sessions.recent(key, recent) {
                Some(v) => v,
                None => self.sessions.lookup_remember(key, recent, hash.hash())?,
            },
        };
        let s = self.sessions.slot(idx);
        let tag = self.valid.tag;
        let revalidate = s.validated() != tag;
        if revalidate && key.proto == Proto::Udp && !self.backend_kept(t, s) {
            return None;
        }
        let (new_src, new_dst) = match (dir, self.sessions.snat(idx, s)) {
            (Dir::Original, None) => (None, Some(ep(s.backend())?)),
            (Dir::Original, Some(n)) => (Some(ep(&n)?), Some(ep(s.backend())?)),
            (Dir::Reply, None) => (Some(ep(s.frontend())?), None),
            (Dir::Reply, Some(_)) => (Some(ep(s.frontend())?), Some(ep(s.client())?)),
        };
        Some(Hit {
            idx,
            dir,
            revalidate,
            tag,
            new_src,
            new_dst,
        })
    }

    /// Whether the backend of the UDP session in slot `s`, not validated
    /// since the worker's last sweep, is still in the table: one epoch
    /// behind, the filter first (inline), then the change's removed list;
    /// older, its Service.
    #[inline(always)]
    fn backend_kept(&self, t: &ServiceTable, s: &crate::session::Slot) -> bool {
        let behind = self.valid.behind(s.validated());
        t.epoch.surely_kept(behind, s.backend())
            || t.backend_still_valid(
                behind,
                &Frontend {
                    addr: *s.frontend(),
                    proto: Proto::Udp,
                },
                s.backend(),
            )
    }

    /// The session side of a translated packet: the new validation tag,
    /// state and expiry, and the counters.
    #[inline(always)]
    fn fast_commit<E>(&mut self, st: &WorkerStats, hit: Hit<E>, now: u64) {
        if hit.revalidate {
            self.sessions.set_validated(hit.idx, hit.tag);
        }
        // No SYN/FIN/RST here (`l4_of`): no state machine to run.
        self.sessions.touch_established(hit.idx, hit.dir, now);
        WorkerStats::add(
            if hit.dir == Dir::Original {
                &st.nat_forward
            } else {
                &st.nat_reverse
            },
            1,
        );
        WorkerStats::add(&st.fast_path, 1);
    }
}

/// What the fast path needs of a next hop, all of it in the cache entry:
/// the egress port, the frame's new Ethernet addresses (the neighbour's
/// MAC, then the port's) and the port's MTU — so that sending does not
/// wait on a second, dependent load of the port's facts after the entry's
/// (the ports are fixed for the pipeline's life). Only for untagged ports:
/// a next hop behind a tagged port is never cached
/// ([`Pipeline::resolve_egress`]). Two words, so that a lookup returns it
/// in two registers (the miss path's call too: `rest` is never 0, which
/// gives `Option<NextHop>` its niche) rather than through the stack,
/// where the fields' narrower loads after a 16-byte copy waited on
/// store forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NextHop {
    /// The frame's bytes 0..8 (the neighbour's MAC, the first two bytes
    /// of the port's), read native-endian.
    l2a: u64,
    /// The frame's bytes 8..12 (the rest of the port's MAC), then the
    /// port number and its MTU, each read native-endian.
    rest: NonZeroU64,
}

impl NextHop {
    /// `None` only for a port number, MAC tail and MTU all 0 (no port has
    /// an MTU of 0).
    fn new(port: u16, neighbour: MacAddr, src: MacAddr, mtu: u16) -> Option<NextHop> {
        let (n, s, p, m) = (neighbour.0, src.0, port.to_ne_bytes(), mtu.to_ne_bytes());
        let l2a = u64::from_ne_bytes([n[0], n[1], n[2], n[3], n[4], n[5], s[0], s[1]]);
        let rest = u64::from_ne_bytes([s[2], s[3], s[4], s[5], p[0], p[1], m[0], m[1]]);
        Some(NextHop {
            l2a,
            rest: NonZeroU64::new(rest)?,
        })
    }

    /// From a cache entry's two words (`None` for an empty entry's 0).
    #[inline(always)]
    fn of(l2a: u64, rest: u64) -> Option<NextHop> {
        Some(NextHop {
            l2a,
            rest: NonZeroU64::new(rest)?,
        })
    }

    #[inline(always)]
    pub(super) fn port(self) -> u16 {
        let b = self.rest.get().to_ne_bytes();
        u16::from_ne_bytes([b[4], b[5]])
    }

    #[inline(always)]
    pub(super) fn mtu(self) -> u16 {
        let b = self.rest.get().to_ne_bytes();
        u16::from_ne_bytes([b[6], b[7]])
    }

    /// The frame's new Ethernet addresses: destination, then source.
    #[cfg(test)]
    fn l2(self) -> [u8; 12] {
        let (a, b) = (self.l2a.to_ne_bytes(), self.rest.get().to_ne_bytes());
        [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3],
        ]
    }

    /// Writes [`Self::l2`] into the frame's first 12 bytes (an 8- and a
    /// 4-byte store).
    #[inline(always)]
    fn write_l2(self, d: &mut [u8]) {
        if let Some(d) = d.get_mut(..12) {
            let b = self.rest.get().to_ne_bytes();
            d[..8].copy_from_slice(&self.l2a.to_ne_bytes());
            d[8..].copy_from_slice(&b[..4]);
        }
    }
}

/// A cached next hop (32 bytes: two per cache line, see [`EgressSet`]).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct Egress {
    /// The neighbour stays fresh before this time (ms).
    until: u64,
    /// The IPv4 destination (its octets in memory order).
    dst: u32,
    /// The cache's stamp when this was resolved; 0: empty.
    stamp: u32,
    /// The [`NextHop`]'s words (0: empty).
    l2a: u64,
    rest: u64,
}

/// Two ways of the set-associative cache, one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct EgressSet([Egress; 2]);

/// A cached IPv6 next hop: [`Egress`] with a 16-byte destination, one
/// cache line per way (44 bytes do not fit two to a line).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Egress6 {
    /// The IPv6 destination (its bytes read native-endian, as [`Ep6::addr`]).
    dst: u128,
    /// The neighbour stays fresh before this time (ms).
    until: u64,
    /// The cache's stamp when this was resolved; 0: empty.
    stamp: u32,
    /// The [`NextHop`]'s words (0: empty).
    l2a: u64,
    rest: u64,
}

/// Two ways of the IPv6 cache (two cache lines; a hit on the most recent
/// way reads one).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct EgressSet6([Egress6; 2]);

// The layouts the docs above promise.
const _: () = assert!(core::mem::size_of::<Egress>() == 32);
const _: () = assert!(core::mem::size_of::<EgressSet>() == 64);
const _: () = assert!(core::mem::size_of::<Egress6>() == 64);
const _: () = assert!(core::mem::size_of::<EgressSet6>() == 128);

/// The fast path's next-hop cache: route + fresh neighbour per IPv4
/// destination, two-way set-associative, sized to the neighbour cache
/// (two places per neighbour, [`EgressCache::new`]) so that a table with
/// as many next hops as the neighbour cache holds stays in it; and the
/// same per IPv6 destination in `sets6` (as many sets, of two 64-byte
/// ways), under the same stamp. Every entry
/// is valid only for the stamp it was resolved under, and the stamp moves
/// whenever the table version (routes) or the neighbour generation (every
/// neighbour change) does — the same rule as one compare of both per entry,
/// in a 32-byte entry; and only until the neighbour would go stale.
pub(super) struct EgressCache {
    sets: crate::hugemem::HugeVec<EgressSet>,
    /// `32 - log2(sets.len())`: the set is the top bits of a multiplicative hash.
    shift: u32,
    /// The current stamp. It starts at 0 with `key` at a value no table
    /// and neighbour cache have together; empty entries (stamp 0) never
    /// match because their `until` is 0.
    stamp: u32,
    /// (table version, neighbour generation) of `stamp`.
    key: (u64, u64),
    /// Lookups that had to route and resolve (for tests and benchmarks).
    misses: u64,
    /// The IPv6 sets (as many, 128 bytes each).
    sets6: crate::hugemem::HugeVec<EgressSet6>,
    /// `64 - log2(sets6.len())`.
    shift6: u32,
}

/// Bounds of the number of sets (64 bytes each).
const EGRESS_MIN_SETS: usize = 128;
const EGRESS_MAX_SETS: usize = 1 << 20;

impl EgressCache {
    /// A cache with two places per neighbour-cache entry (`neighbors`),
    /// rounded up to a power of two, for IPv4 and two for IPv6: 192 bytes
    /// per neighbour (64 for IPv4, 128 for IPv6), at least 24 KiB, at
    /// most 192 MiB. Allocated once.
    pub(super) fn new(neighbors: usize) -> Self {
        let n = neighbors
            .clamp(EGRESS_MIN_SETS, EGRESS_MAX_SETS)
            .next_power_of_two();
        let n6 = n;
        EgressCache {
            sets: crate::hugemem::HugeVec::from_elem(EgressSet::default(), n),
            shift: 32 - n.trailing_zeros(),
            stamp: 0,
            key: (u64::MAX, u64::MAX),
            misses: 0,
            sets6: crate::hugemem::HugeVec::from_elem(EgressSet6::default(), n6),
            shift6: 64 - n6.trailing_zeros(),
        }
    }

    /// Bytes this cache takes.
    pub(super) fn memory_bytes(&self) -> usize {
        self.sets.len() * core::mem::size_of::<EgressSet>()
            + self.sets6.len() * core::mem::size_of::<EgressSet6>()
    }

    /// The stamp for `(version, generation)`: the current one, or (on a
    /// change of either) the next, which makes everything cached before
    /// dead; on the (theoretical) wrap of the stamp the cache is emptied.
    #[inline(always)]
    fn sync(&mut self, version: u64, generation: u64) -> u32 {
        if self.key == (version, generation) {
            self.stamp
        } else {
            self.advance(version, generation)
        }
    }

    #[cold]
    #[inline(never)]
    fn advance(&mut self, version: u64, generation: u64) -> u32 {
        self.key = (version, generation);
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.sets.fill(EgressSet::default());
            self.sets6.fill(EgressSet6::default());
            self.stamp = 1;
        }
        self.stamp
    }

    #[inline(always)]
    fn set_of(&self, d4: u32) -> usize {
        (d4.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    /// The IPv6 set of `w` (an address's bytes read native-endian): a
    /// multiplicative hash of its two halves.
    #[inline(always)]
    fn set6_of(&self, w: u128) -> usize {
        let x = (w as u64) ^ ((w >> 64) as u64);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift6) as usize
    }

    /// Prefetches the set an IPv4 destination `dst` would be cached in
    /// (for an IPv6 one, some IPv4 set: a wasted hint; telling the
    /// families apart here cost the IPv4 pre-pass ~10 instructions per
    /// packet).
    #[inline(always)]
    pub(super) fn prefetch(&self, dst: &Addr) {
        let d4 = u32::from_ne_bytes([dst.0[12], dst.0[13], dst.0[14], dst.0[15]]);
        if let Some(set) = self.sets.get(self.set_of(d4)) {
            crate::dpdk::prefetch_read(set);
        }
    }
}

/// Puts a newly resolved next hop `e` into a two-way set: in the way
/// `reusable` accepts (the one that held this destination, or a dead
/// entry), else way 0 after the older entry moved to way 1 (way 0 holds
/// the most recently resolved).
#[inline(always)]
fn place<E: Copy>(set: &mut [E; 2], e: E, reusable: impl Fn(&E) -> bool) {
    let w = set.iter().position(reusable).unwrap_or_else(|| {
        set[1] = set[0];
        0
    });
    set[w] = e;
}

impl Pipeline {
    /// The [`NextHop`] (egress port, Ethernet addresses, MTU) of the IPv4
    /// destination whose octets, read native-endian, are `d4`: the route
    /// and a fresh neighbour, from the cache while the table version and
    /// the neighbour generation are unchanged and the neighbour stays
    /// fresh; `None` when there is no route, the neighbour is not fresh or
    /// the port is tagged (the general path then routes, solicits, holds
    /// or tags). The address is built only on a miss.
    #[inline(always)]
    pub(super) fn egress_v4(&mut self, t: &ServiceTable, d4: u32, now: u64) -> Option<NextHop> {
        let stamp = self.egress.sync(t.version, self.neighbors.generation());
        let si = self.egress.set_of(d4);
        if let Some(set) = self.egress.sets.get(si) {
            for e in &set.0 {
                if e.stamp == stamp && e.dst == d4 && now < e.until {
                    return NextHop::of(e.l2a, e.rest);
                }
            }
        }
        self.egress_miss(t, d4, si, stamp, now)
    }

    /// [`Self::egress_v4`] when the cache has no fresh entry: route,
    /// resolve, and cache the answer in set `si` under `stamp`.
    #[inline(never)]
    fn egress_miss(
        &mut self,
        t: &ServiceTable,
        d4: u32,
        si: usize,
        stamp: u32,
        now: u64,
    ) -> Option<NextHop> {
        let (hop, until) = self.resolve_egress(t, &Addr::v4(d4.to_ne_bytes()), now)?;
        let e = Egress {
            until,
            dst: d4,
            stamp,
            l2a: hop.l2a,
            rest: hop.rest.get(),
        };
        if let Some(set) = self.egress.sets.get_mut(si) {
            place(&mut set.0, e, |x| x.dst == d4 || x.stamp != stamp);
        }
        Some(hop)
    }

    /// A next-hop cache miss (counted): the [`NextHop`] and until when its
    /// neighbour stays fresh; `None` (never cached) when the general path
    /// must take the packet: no route, for the node's kernel or behind it,
    /// a neighbour that is not fresh, or a tagged egress port.
    #[inline(always)]
    fn resolve_egress(&mut self, t: &ServiceTable, dst: &Addr, now: u64) -> Option<(NextHop, u64)> {
        self.egress.misses += 1;
        if self.exception.is_some() && t.local_port(dst).is_some() {
            // For the node's kernel: the general path delivers it (never cached).
            return None;
        }
        let hop = t.route(dst)?;
        if self.exception.is_some_and(|x| x.kernel == hop.port) {
            // Behind the kernel (a local pod): the general path delivers it.
            return None;
        }
        let out = self.ports.get(usize::from(hop.port))?;
        if out.vlan.is_some() {
            // The general path writes the tag.
            return None;
        }
        let (mac, until) = self.neighbors.fresh_until(&hop.addr, now)?;
        Some((NextHop::new(hop.port, mac, out.mac, out.mtu)?, until))
    }

    /// [`Self::egress_v4`] for an IPv6 destination whose bytes, read
    /// native-endian, are `dst` ([`Ep6::addr`]): the same answers under the
    /// same invalidation rules, from the IPv6 sets. The address is built
    /// only on a miss.
    #[inline(always)]
    pub(super) fn egress6_for(&mut self, t: &ServiceTable, dst: u128, now: u64) -> Option<NextHop> {
        let stamp = self.egress.sync(t.version, self.neighbors.generation());
        let si = self.egress.set6_of(dst);
        if let Some(set) = self.egress.sets6.get(si) {
            for e in &set.0 {
                if e.stamp == stamp && e.dst == dst && now < e.until {
                    return NextHop::of(e.l2a, e.rest);
                }
            }
        }
        self.egress6_miss(t, dst, si, stamp, now)
    }

    /// [`Self::egress6_for`] on a miss: resolve, and cache in set `si`.
    #[inline(never)]
    fn egress6_miss(
        &mut self,
        t: &ServiceTable,
        dst: u128,
        si: usize,
        stamp: u32,
        now: u64,
    ) -> Option<NextHop> {
        let (hop, until) = self.resolve_egress(t, &Addr(dst.to_ne_bytes()), now)?;
        let e = Egress6 {
            dst,
            until,
            stamp,
            l2a: hop.l2a,
            rest: hop.rest.get(),
        };
        if let Some(set) = self.egress.sets6.get_mut(si) {
            place(&mut set.0, e, |x| x.dst == dst || x.stamp != stamp);
        }
        Some(hop)
    }

    /// Fast-path next-hop lookups that missed the cache so far.
    pub fn next_hop_misses(&self) -> u64 {
        self.egress.misses
    }

    /// Bytes of the fast path's next-hop cache (allocated once, sized to
    /// the neighbour cache: 64 bytes per neighbour for IPv4, 128 for IPv6).
    pub fn next_hop_cache_bytes(&self) -> usize {
        self.egress.memory_bytes()
    }

    /// The memory of this pipeline's large tables (sessions and next-hop
    /// cache, all reserved at creation) and how much of it the kernel backs
    /// with huge pages ([`crate::hugemem`]; reads `/proc`: control time only).
    pub fn table_memory(&self) -> TableMemory {
        TableMemory {
            bytes: self.sessions.memory_bytes() + self.egress.memory_bytes(),
            huge_page_bytes: self.sessions.huge_page_bytes()
                + self.egress.sets.huge_page_bytes().unwrap_or(0)
                + self.egress.sets6.huge_page_bytes().unwrap_or(0),
        }
    }
}

/// See [`Pipeline::table_memory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableMemory {
    /// Bytes reserved (and faulted in) for the tables.
    pub bytes: usize,
    /// Of which on huge pages.
    pub huge_page_bytes: usize,
}

/// Rewrites an untagged IPv4 TCP/UDP frame's source and/or destination
/// (address and port), decrements the TTL, and updates both checksums in
/// one RFC 1624 (eqn. 3) adjustment each. The general path applies the same
/// changes one at a time; ones'-complement sums are order-independent, so
/// the bytes are the same (the differential test checks it). UDP: a zero
/// checksum ("none") stays zero, a zero result becomes 0xFFFF.
///
/// The sums are taken over native-endian words (the addresses and the old
/// ports as 32-bit words, the new ports and the TTL and checksum fields as
/// 16-bit ones) and written back in native order: a ones'-complement
/// sum read in the other byte order is the byte swap of the sum, so no
/// word is byte-swapped ([`checksum::fold64`]; every sum here is non-zero,
/// so the folded result is the same representative the general path's
/// big-endian sums give).
#[inline(always)]
fn rewrite_v4(d: &mut [u8], udp: bool, src: Option<Ep4>, dst: Option<Ep4>) {
    // The L4 checksum first (its offset differs); then the fixed 38 bytes.
    let at = if udp { 40 } else { 50 };
    let Some(&[c0, c1]) = d.get(at..at + 2) else {
        return;
    };
    let c = u16::from_ne_bytes([c0, c1]);
    let Some(h) = d.get_mut(..38) else {
        return;
    };
    let Ok(h) = <&mut [u8; 38]>::try_from(h) else {
        return;
    };
    let rd32 =
        |h: &[u8; 38], at: usize| u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let (os, od, op) = (rd32(h, 26), rd32(h, 30), rd32(h, 34));
    let ns = src.map_or(os, |n| n.addr);
    let nd = dst.map_or(od, |n| n.addr);
    // The new ports as their wire bytes read natively (16-bit words).
    let nsp = src.map_or(u16::from_ne_bytes([h[34], h[35]]), |n| n.port);
    let ndp = dst.map_or(u16::from_ne_bytes([h[36], h[37]]), |n| n.port);
    // Sum of ~old + new over both addresses: shared by the IP header and
    // the pseudo-header.
    let addrs = u64::from(!os) + u64::from(ns) + u64::from(!od) + u64::from(nd);
    // IP header: addresses and TTL (the word TTL | protocol).
    let ttl_word = u16::from_ne_bytes([h[22], h[23]]);
    h[22] -= 1;
    let hc = u16::from_ne_bytes([h[24], h[25]]);
    let s = u64::from(!hc)
        + addrs
        + u64::from(!ttl_word)
        + u64::from(u16::from_ne_bytes([h[22], h[23]]));
    h[24..26].copy_from_slice(&(!checksum::fold64(s)).to_ne_bytes());
    h[26..30].copy_from_slice(&ns.to_ne_bytes());
    h[30..34].copy_from_slice(&nd.to_ne_bytes());
    h[34..36].copy_from_slice(&nsp.to_ne_bytes());
    h[36..38].copy_from_slice(&ndp.to_ne_bytes());
    // TCP/UDP: pseudo-header addresses and ports.
    if !(udp && c == 0) {
        let s = u64::from(!c) + addrs + u64::from(!op) + u64::from(nsp) + u64::from(ndp);
        let mut r = !checksum::fold64(s);
        if udp && r == 0 {
            r = 0xffff;
        }
        if let Some(f) = d.get_mut(at..at + 2) {
            f.copy_from_slice(&r.to_ne_bytes());
        }
    }
}

/// Rewrites an untagged IPv6 TCP/UDP frame (no extension header) as
/// [`rewrite_v4`] does an IPv4 one: source and/or destination (address and
/// port), hop limit (IPv6 has no header checksum), and the TCP/UDP
/// checksum in one RFC 1624 adjustment over the pseudo-header's addresses
/// and the ports. The general path applies the same changes one at a time:
/// the same bytes (the differential test checks it). UDP: the fast path
/// never sees a zero checksum (the general path keeps it as it is); a zero
/// result becomes 0xFFFF, as there.
#[inline(always)]
fn rewrite_v6(d: &mut [u8], udp: bool, src: Option<Ep6>, dst: Option<Ep6>) {
    let at = if udp { 60 } else { 70 };
    let Some(&[c0, c1]) = d.get(at..at + 2) else {
        return;
    };
    let Some(h) = d.get_mut(..58) else {
        return;
    };
    let Ok(h) = <&mut [u8; 58]>::try_from(h) else {
        return;
    };
    let mut s = u64::from(!u16::from_ne_bytes([c0, c1]));
    if let Some(n) = src {
        s += change_v6(h, 22, 54, n);
    }
    if let Some(n) = dst {
        s += change_v6(h, 38, 56, n);
    }
    h[21] -= 1;
    let mut r = !checksum::fold64(s);
    if udp && r == 0 {
        r = 0xffff;
    }
    if let Some(f) = d.get_mut(at..at + 2) {
        f.copy_from_slice(&r.to_ne_bytes());
    }
}

/// [`rewrite_v6`]'s change of one endpoint: writes the address (16
/// bytes at `a`) and port (at `p`) of `n` into `h` and returns the sum of
/// ~old + new over their native-endian words (as in [`rewrite_v4`]), for
/// the TCP/UDP checksum. The new address's words are the four 32-bit
/// pieces of `n.addr`: on either byte order each is one of the address's
/// 4-byte groups read native-endian, and the sum does not depend on their
/// order. A function of its own, inlined: as a closure called twice it
/// was not (a call per endpoint).
#[inline(always)]
fn change_v6(h: &mut [u8; 58], a: usize, p: usize, n: Ep6) -> u64 {
    let ne32 = |b: &[u8], at: usize| {
        u64::from(u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
    };
    let mut s = 0u64;
    for i in 0..4 {
        s += (ne32(h, a + 4 * i) ^ 0xFFFF_FFFF) + u64::from((n.addr >> (32 * i)) as u32);
    }
    s += u64::from(!u16::from_ne_bytes([h[p], h[p + 1]])) + u64::from(n.port);
    h[a..a + 16].copy_from_slice(&n.addr.to_ne_bytes());
    h[p..p + 2].copy_from_slice(&n.port.to_ne_bytes());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::LatePrefetch;
    use crate::table::{Interface, MasqueradePolicy, ServiceSpec, StaticNeighbor, TableSpec};
    use core::sync::atomic::Ordering::Relaxed;
    use proptest::prelude::*;

    const P0: MacAddr = MacAddr([2, 0, 0, 0, 0, 0]);
    const P1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);

    fn v4(a: [u8; 4]) -> Addr {
        Addr::v4(a)
    }

    /// The IPv6 address `2001:2:<net>::<host>` (`net` 0: clients on port
    /// 0; 1: backends on port 1; 0x100: VIPs).
    fn a6(net: u16, host: u16) -> [u8; 16] {
        let mut a = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[4..6].copy_from_slice(&net.to_be_bytes());
        a[14..16].copy_from_slice(&host.to_be_bytes());
        a
    }

    fn v6(net: u16, host: u16) -> Addr {
        Addr::v6(a6(net, host))
    }

    /// Two Services (one masqueraded), backends behind port 1 (one learned
    /// neighbour that can go stale, others static), clients on port 0.
    fn table(version: u64) -> ServiceTable {
        table_without(version, None)
    }

    /// [`table`] without backend `198.19.0.<skip>`.
    fn table_without(version: u64, skip: Option<u8>) -> ServiceTable {
        ServiceTable::new(spec_without(skip), version)
    }

    /// A Service of the tests' tables: `frontend` (`proto`) to `backends`.
    fn service(
        name: String,
        proto: Proto,
        frontend: SockAddr,
        backends: Vec<SockAddr>,
        masquerade: bool,
    ) -> ServiceSpec {
        ServiceSpec {
            source_ranges: vec![],
            affinity_timeout: None,
            masquerade,
            external: false,
            no_backends: Default::default(),
            short_circuit: vec![],
            algorithm: Default::default(),
            name,
            frontend: Frontend {
                addr: frontend,
                proto,
            },
            backends,
        }
    }

    /// What [`table_without`] builds.
    fn spec_without(skip: Option<u8>) -> TableSpec {
        let backends = |addr: fn(u8) -> Addr| {
            (10..13)
                .filter(|&b| Some(b) != skip)
                .map(|b| SockAddr::new(addr(b), 8080))
                .collect()
        };
        let svc6 = |vip: u8, proto, masquerade| {
            service(
                format!("t6/{vip}"),
                proto,
                SockAddr::new(v6(0x100, u16::from(vip)), 80),
                backends(|b| v6(1, u16::from(b))),
                masquerade,
            )
        };
        let svc = |vip: u8, proto, masquerade| {
            service(
                format!("t/{vip}"),
                proto,
                SockAddr::new(v4([198, 18, 100, vip]), 80),
                backends(|b| v4([198, 19, 0, b])),
                masquerade,
            )
        };
        TableSpec {
            services: vec![
                svc(1, Proto::Tcp, false),
                svc(1, Proto::Udp, false),
                svc(2, Proto::Tcp, true),
                svc(2, Proto::Udp, true),
                svc6(1, Proto::Tcp, false),
                svc6(1, Proto::Udp, false),
                svc6(2, Proto::Tcp, true),
                svc6(2, Proto::Udp, true),
            ],
            interfaces: vec![
                Interface {
                    port: 0,
                    addr: v4([198, 18, 0, 1]),
                    prefix_len: 24,
                },
                Interface {
                    port: 1,
                    addr: v4([198, 19, 0, 1]),
                    prefix_len: 24,
                },
                Interface {
                    port: 0,
                    addr: v6(0, 1),
                    prefix_len: 64,
                },
                Interface {
                    port: 1,
                    addr: v6(1, 1),
                    prefix_len: 64,
                },
            ],
            neighbors: [10u8, 11]
                .iter()
                .map(|&b| StaticNeighbor {
                    addr: v4([198, 19, 0, b]),
                    mac: MacAddr([2, 0, 0, 1, 0, b]),
                    port: 1,
                })
                .chain(core::iter::once(StaticNeighbor {
                    addr: v4([198, 18, 0, 2]),
                    mac: CLIENT_MAC,
                    port: 0,
                }))
                .chain([10u16, 11].iter().map(|&b| StaticNeighbor {
                    addr: v6(1, b),
                    mac: MacAddr([2, 0, 0, 1, 6, b as u8]),
                    port: 1,
                }))
                .chain(core::iter::once(StaticNeighbor {
                    addr: v6(0, 2),
                    mac: CLIENT_MAC,
                    port: 0,
                }))
                .collect(),
            masquerade: MasqueradePolicy::default(),
            ..Default::default()
        }
    }

    /// A two-port pipeline (port 1's MTU `mtu1`) with 1024 sessions and
    /// `neighbors` neighbour places (`None`: the default).
    fn bare_pipeline(mtu1: u16, neighbors: Option<usize>) -> Pipeline {
        two_port_pipeline(
            PortInfo {
                mac: P1,
                vlan: None,
                mtu: mtu1,
            },
            neighbors,
        )
    }

    /// [`bare_pipeline`] with port 1 as `port1`.
    fn two_port_pipeline(port1: PortInfo, neighbors: Option<usize>) -> Pipeline {
        let d = PipelineConfig::default();
        Pipeline::new(
            0,
            1,
            vec![
                PortInfo {
                    mac: P0,
                    vlan: None,
                    mtu: 1500,
                },
                port1,
            ],
            PipelineConfig {
                sessions: 1024,
                neighbors: neighbors.unwrap_or(d.neighbors),
                ..d
            },
        )
    }

    fn pipeline(fast: bool, mtu1: u16) -> Pipeline {
        let mut p = bare_pipeline(mtu1, None);
        p.set_fast_path(fast);
        // Backend .12 is learned (not static): it ages, goes stale, is re-probed.
        p.neighbors.learn(
            NeighborUpdate {
                addr: v4([198, 19, 0, 12]),
                mac: MacAddr([2, 0, 0, 1, 0, 12]),
                port: 1,
            },
            0,
        );
        // So is the IPv6 backend 2001:2:1::12.
        p.neighbors.learn(
            NeighborUpdate {
                addr: v6(1, 12),
                mac: MacAddr([2, 0, 0, 1, 6, 12]),
                port: 1,
            },
            0,
        );
        p
    }

    /// How an IPv6 test frame deviates from a plain one.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum V6 {
        Plain,
        /// A destination-options extension header before TCP/UDP.
        Ext,
        /// Hop limit 1.
        Hop1,
        /// UDP checksum 0 (invalid in IPv6).
        UdpZero,
    }

    /// Ethernet + IPv6 + TCP/UDP with a valid checksum and `payload` bytes.
    fn frame6(
        dmac: MacAddr,
        src: ([u8; 16], u16),
        dst: ([u8; 16], u16),
        tcp_flags: Option<u8>,
        payload: usize,
        how: V6,
    ) -> Vec<u8> {
        let l4len = if tcp_flags.is_some() { 20 } else { 8 } + payload;
        let ext = if how == V6::Ext { 8 } else { 0 };
        let proto = if tcp_flags.is_some() { 6 } else { 17 };
        let mut f = vec![0u8; 14 + 40 + ext + l4len];
        f[0..6].copy_from_slice(&dmac.0);
        f[6..12].copy_from_slice(&CLIENT_MAC.0);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let ip = &mut f[14..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((ext + l4len) as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = if how == V6::Hop1 { 1 } else { 64 };
        ip[8..24].copy_from_slice(&src.0);
        ip[24..40].copy_from_slice(&dst.0);
        if ext > 0 {
            ip[6] = 60;
            // Next header, length 0 (8 bytes), PadN of 4.
            ip[40..48].copy_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        }
        let l4 = &mut ip[40 + ext..];
        l4[0..2].copy_from_slice(&src.1.to_be_bytes());
        l4[2..4].copy_from_slice(&dst.1.to_be_bytes());
        for (i, b) in l4
            .iter_mut()
            .enumerate()
            .skip(if tcp_flags.is_some() { 20 } else { 8 })
        {
            *b = i as u8;
        }
        match tcp_flags {
            Some(fl) => {
                l4[12] = 5 << 4;
                l4[13] = fl;
                let c = checksum::l4_v6(&src.0, &dst.0, 6, l4);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            None => {
                l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
                let c = checksum::udp_final(checksum::l4_v6(&src.0, &dst.0, 17, l4));
                if how != V6::UdpZero {
                    l4[6..8].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        f
    }

    /// An IPv4 (4-byte addresses) or IPv6 (16-byte) frame.
    fn frame_any(
        dmac: MacAddr,
        src: (&[u8], u16),
        dst: (&[u8], u16),
        tcp_flags: Option<u8>,
        payload: usize,
        how: V6,
    ) -> Vec<u8> {
        match (<[u8; 4]>::try_from(src.0), <[u8; 4]>::try_from(dst.0)) {
            (Ok(s), Ok(d)) => frame(dmac, (s, src.1), (d, dst.1), tcp_flags, payload),
            _ => frame6(
                dmac,
                (src.0.try_into().unwrap(), src.1),
                (dst.0.try_into().unwrap(), dst.1),
                tcp_flags,
                payload,
                how,
            ),
        }
    }

    /// Ethernet + IPv4 + TCP/UDP with valid checksums and `payload` bytes.
    fn frame(
        dmac: MacAddr,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        tcp_flags: Option<u8>,
        payload: usize,
    ) -> Vec<u8> {
        let l4len = if tcp_flags.is_some() { 20 } else { 8 } + payload;
        let mut f = vec![0u8; 14 + 20 + l4len];
        f[0..6].copy_from_slice(&dmac.0);
        f[6..12].copy_from_slice(&CLIENT_MAC.0);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = if tcp_flags.is_some() { 6 } else { 17 };
        ip[12..16].copy_from_slice(&src.0);
        ip[16..20].copy_from_slice(&dst.0);
        let c = checksum::ipv4_header(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let l4 = &mut ip[20..];
        l4[0..2].copy_from_slice(&src.1.to_be_bytes());
        l4[2..4].copy_from_slice(&dst.1.to_be_bytes());
        for (i, b) in l4
            .iter_mut()
            .enumerate()
            .skip(if tcp_flags.is_some() { 20 } else { 8 })
        {
            *b = i as u8;
        }
        match tcp_flags {
            Some(fl) => {
                l4[12] = 5 << 4;
                l4[13] = fl;
                let c = checksum::l4_v4(src.0, dst.0, 6, l4);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            None => {
                l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
                let c = checksum::l4_v4(src.0, dst.0, 17, l4);
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
        f
    }

    /// What a packet did: verdict, bytes, and every counter.
    fn run(
        p: &mut Pipeline,
        t: &ServiceTable,
        st: &WorkerStats,
        port: u16,
        f: &[u8],
        now: u64,
    ) -> (Verdict, Vec<u8>) {
        let mut b = VecBuf::new(f);
        let v = p.process(t, st, port, &mut b, now, false);
        (v, b.bytes())
    }

    fn counters(st: &WorkerStats) -> Vec<u64> {
        let mut v = vec![
            st.nat_forward.load(Relaxed),
            st.nat_reverse.load(Relaxed),
            st.sessions_created.load(Relaxed),
            st.sessions_flushed.load(Relaxed),
            st.routed.load(Relaxed),
            st.too_big_sent.load(Relaxed),
        ];
        v.extend(st.drops.iter().map(|d| d.load(Relaxed)));
        v
    }

    /// Where a translated flow's replies come from and go to:
    /// (backend address, backend port, reply destination, its port);
    /// 4-byte addresses for IPv4, 16 for IPv6.
    type Reply = (Vec<u8>, u16, Vec<u8>, u16);

    /// One step of a scenario: which packet, when, and how it is damaged.
    #[derive(Clone, Debug)]
    struct Step {
        client: u8,
        service: u8,
        tcp: Option<u8>,
        reply: bool,
        payload: usize,
        dt: u64,
        damage: Option<(usize, u8)>,
        /// A new table version, without backend .<n> when `Some(Some(n))`.
        new_table: Option<Option<u8>>,
        relearn: Option<u8>,
        /// IPv6 (and how the frame deviates), else IPv4.
        v6: Option<V6>,
        /// An IPv6 frame with the IPv4-mapped addresses of the IPv4 flow.
        mapped: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0u8..6,
            1u8..3,
            prop_oneof![
                Just(None),
                Just(Some(tcp::ACK)),
                Just(Some(tcp::ACK | 0x08)),
                Just(Some(tcp::SYN)),
                Just(Some(tcp::SYN | tcp::ACK)),
                Just(Some(tcp::FIN | tcp::ACK)),
                Just(Some(tcp::RST)),
            ],
            any::<bool>(),
            prop_oneof![Just(0usize), Just(18), Just(600), Just(1400)],
            prop_oneof![Just(0u64), Just(1), Just(1_000), Just(40_000)],
            prop::option::weighted(0.3, (0usize..80, any::<u8>())),
            prop::option::weighted(0.05, prop::option::weighted(0.5, 10u8..13)),
            prop::option::weighted(0.1, 0u8..4),
            prop::option::weighted(
                0.5,
                prop_oneof![
                    6 => Just(V6::Plain),
                    1 => Just(V6::Ext),
                    1 => Just(V6::Hop1),
                    1 => Just(V6::UdpZero),
                ],
            ),
            prop::bool::weighted(0.03),
        )
            .prop_map(
                |(
                    client,
                    service,
                    tcp,
                    reply,
                    payload,
                    dt,
                    damage,
                    new_table,
                    relearn,
                    v6,
                    mapped,
                )| Step {
                    client,
                    service,
                    tcp,
                    reply,
                    payload,
                    dt,
                    damage,
                    new_table,
                    relearn,
                    v6,
                    mapped,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// The fast path and the general path give the same verdicts, the
        /// same bytes and the same counters for any packet sequence: clients
        /// opening, using and closing TCP/UDP sessions (DNAT-only and
        /// masqueraded) over IPv4 and IPv6, replies, table changes (some
        /// removing a backend), neighbours going stale,
        /// neighbours re-learned with a new MAC, packets over the egress MTU,
        /// damaged bytes anywhere in the headers; IPv6 frames with an
        /// extension header, hop limit 1 or a zero UDP checksum, and IPv6
        /// frames carrying an IPv4 flow's (mapped) addresses.
        #[test]
        fn fast_path_matches_the_general_path(steps in prop::collection::vec(step(), 1..60), mtu1 in prop_oneof![Just(1500u16), Just(1000)]) {
            let mut fast = pipeline(true, mtu1);
            let mut slow = pipeline(false, mtu1);
            let (sf, ss) = (WorkerStats::default(), WorkerStats::default());
            let mut version = 1;
            let mut t = table(version);
            fast.on_table(&t);
            slow.on_table(&t);
            let mut now = 0;
            // Where each client's flow went (from the slow path's output).
            let mut seen: Vec<Option<Reply>> = vec![None; 128];
            for s in &steps {
                now += s.dt;
                if let Some(m) = s.relearn {
                    // The learned backends answer ARP / ND from another MAC.
                    for addr in [v4([198, 19, 0, 12]), v6(1, 12)] {
                        let u = NeighborUpdate {
                            addr,
                            mac: MacAddr([2, 0, 0, 2, m, 12]),
                            port: 1,
                        };
                        fast.learn_from_peer(u, now);
                        slow.learn_from_peer(u, now);
                    }
                }
                if let Some(skip) = s.new_table {
                    version += 1;
                    t = table_without(version, skip);
                    fast.on_table(&t);
                    slow.on_table(&t);
                }
                let cport = 40_000 + u16::from(s.client);
                let is6 = s.v6.is_some() && !s.mapped;
                let how = s.v6.unwrap_or(V6::Plain);
                let (client, vip): (Vec<u8>, Vec<u8>) = if is6 {
                    (a6(0, 2).to_vec(), a6(0x100, u16::from(s.service)).to_vec())
                } else {
                    (vec![198, 18, 0, 2], vec![198, 18, 100, s.service])
                };
                let slot = (usize::from(s.client) * 4 + usize::from(s.service) * 2 + usize::from(s.tcp.is_some())) * 2 + usize::from(is6);
                let (port, mut f) = match (s.reply, &seen[slot]) {
                    (true, Some((bsrc, bport, cdst, cdport))) => {
                        (1, frame_any(P1, (bsrc, *bport), (cdst, *cdport), s.tcp, s.payload, how))
                    }
                    _ => (0, frame_any(P0, (&client, cport), (&vip, 80), s.tcp, s.payload, how)),
                };
                if s.mapped {
                    // The same tuple in an IPv6 header, as ::ffff:a.b.c.d.
                    let map = |a: &[u8]| {
                        let mut m = [0u8; 16];
                        m[10..12].copy_from_slice(&[0xff, 0xff]);
                        m[12..].copy_from_slice(a);
                        m
                    };
                    let ip = &f[14..];
                    let (ms, md) = (map(&ip[12..16]), map(&ip[16..20]));
                    let l4 = &ip[20..];
                    let (sp, dp) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
                    f = frame6(if port == 0 { P0 } else { P1 }, (ms, sp), (md, dp), s.tcp, s.payload, how);
                }
                if let Some((at, x)) = s.damage {
                    let at = at % f.len();
                    f[at] ^= x | 1;
                }
                let (vf, bf) = run(&mut fast, &t, &sf, port, &f, now);
                let (vs, bs) = run(&mut slow, &t, &ss, port, &f, now);
                prop_assert_eq!(vf, vs);
                prop_assert_eq!(&bf, &bs);
                prop_assert_eq!(counters(&sf), counters(&ss));
                // Neighbour probes (a stale backend is re-solicited) too.
                let sol_f: Vec<_> = fast.take_solicits().collect();
                let sol_s: Vec<_> = slow.take_solicits().collect();
                prop_assert_eq!(sol_f, sol_s);
                if port == 0 && vs == Verdict::Tx(1) && s.damage.is_none() && !s.mapped {
                    // The translated packet: the reply goes backend -> (snat or client).
                    let ip = &bs[14..];
                    seen[slot] = Some(if is6 {
                        (
                            ip[24..40].to_vec(),
                            u16::from_be_bytes([ip[42], ip[43]]),
                            ip[8..24].to_vec(),
                            u16::from_be_bytes([ip[40], ip[41]]),
                        )
                    } else {
                        (
                            ip[16..20].to_vec(),
                            u16::from_be_bytes([ip[22], ip[23]]),
                            ip[12..16].to_vec(),
                            u16::from_be_bytes([ip[20], ip[21]]),
                        )
                    });
                }
            }
        }
    }

    #[test]
    fn established_packets_take_the_fast_path() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        let f = frame(
            P0,
            ([198, 18, 0, 2], 40000),
            ([198, 18, 100, 1], 80),
            None,
            18,
        );
        let (v, out) = run(&mut p, &t, &st, 0, &f, 0);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(
            st.fast_path.load(Relaxed),
            0,
            "the first packet opens the session"
        );
        for i in 1..=10 {
            assert_eq!(run(&mut p, &t, &st, 0, &f, i).0, Verdict::Tx(1));
        }
        assert_eq!(st.fast_path.load(Relaxed), 10);
        // The backend's reply, reverse-translated on the fast path too.
        let ip = &out[14..];
        let r = frame(
            P1,
            (ip[16..20].try_into().unwrap(), 8080),
            ([198, 18, 0, 2], 40000),
            None,
            18,
        );
        let (v, back) = run(&mut p, &t, &st, 1, &r, 20);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(&back[26..30], &[198, 18, 100, 1], "source is the VIP again");
        assert_eq!(st.fast_path.load(Relaxed), 11);
        // A new table version that keeps the backend: revalidated on the
        // fast path too.
        let t2 = table(2);
        p.on_table(&t2);
        assert_eq!(run(&mut p, &t2, &st, 0, &f, 30).0, Verdict::Tx(1));
        assert_eq!(st.fast_path.load(Relaxed), 12);
        // One that removes it: the general path flushes the UDP session and
        // opens a new one (to another backend).
        let backend = out[30..34].to_vec();
        let t3 = table_without(3, Some(backend[3]));
        p.on_table(&t3);
        let flushed = st.sessions_flushed.load(Relaxed);
        let (v, moved) = run(&mut p, &t3, &st, 0, &f, 40);
        assert_eq!(v, Verdict::Tx(1));
        assert_ne!(
            &moved[30..34],
            &backend[..],
            "moved off the removed backend"
        );
        assert_eq!(st.sessions_flushed.load(Relaxed), flushed + 1);
        assert_eq!(st.fast_path.load(Relaxed), 12);
    }

    #[test]
    fn the_fast_path_remembers_sessions_in_the_recent_lookup_cache() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        let (client, vip) = ([198, 18, 0, 2], [198, 18, 100, 1]);
        let key = FlowKey {
            src: Addr::v4(client),
            dst: Addr::v4(vip),
            sport: 40000,
            dport: 80,
            proto: Proto::Udp,
        };
        let entry = |k: &FlowKey| {
            recent_v4(
                u32::from_ne_bytes(k.src.v4_octets()),
                u32::from_ne_bytes(k.dst.v4_octets()),
                u32::from(k.sport) << 16 | u32::from(k.dport),
                k.proto as u8,
            )
        };
        let f = frame(P0, (client, 40000), (vip, 80), None, 18);
        let (v, out) = run(&mut p, &t, &st, 0, &f, 0);
        assert_eq!(v, Verdict::Tx(1));
        let (idx, _) = p
            .sessions
            .lookup(&key)
            .expect("the first packet opens the session");
        assert_eq!(
            p.sessions.recent(&key, entry(&key)),
            None,
            "the general path leaves it"
        );
        // The second packet: found in the index, and remembered.
        assert_eq!(run(&mut p, &t, &st, 0, &f, 1).0, Verdict::Tx(1));
        assert_eq!(st.fast_path.load(Relaxed), 1);
        assert_eq!(
            p.sessions.recent(&key, entry(&key)),
            Some((idx, Dir::Original))
        );
        // The third: through the cache, the same translation.
        let (v, again) = run(&mut p, &t, &st, 0, &f, 2);
        assert_eq!((v, &again), (Verdict::Tx(1), &out));
        // The reply, under its own tuple's entry.
        let backend: [u8; 4] = out[30..34].try_into().unwrap();
        let r = frame(P1, (backend, 8080), (client, 40000), None, 18);
        assert_eq!(run(&mut p, &t, &st, 1, &r, 3).0, Verdict::Tx(0));
        let rkey = FlowKey {
            src: Addr::v4(backend),
            dst: Addr::v4(client),
            sport: 8080,
            dport: 40000,
            proto: Proto::Udp,
        };
        assert_eq!(
            p.sessions.recent(&rkey, entry(&rkey)),
            Some((idx, Dir::Reply))
        );
        assert_eq!(st.fast_path.load(Relaxed), 3);
    }

    #[test]
    fn cached_next_hops_follow_neighbour_changes_and_ageing() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        // A UDP flow whose backend is the learned (ageing) neighbour .12.
        let (f, out) = (40000u16..41000)
            .map(|port| {
                let f = frame(
                    P0,
                    ([198, 18, 0, 2], port),
                    ([198, 18, 100, 1], 80),
                    None,
                    18,
                );
                let (v, out) = run(&mut p, &t, &st, 0, &f, 0);
                assert_eq!(v, Verdict::Tx(1));
                (f, out)
            })
            .find(|(_, out)| out[33] == 12)
            .expect("some flow lands on backend .12");
        assert_eq!(&out[0..6], &[2, 0, 0, 1, 0, 12]);
        let _ = p.take_solicits().count();
        // Fast path, cache filled, then hit.
        let fast = |st: &WorkerStats| st.fast_path.load(Relaxed);
        for now in [1, 2] {
            let (v, o) = run(&mut p, &t, &st, 0, &f, now);
            assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &[2, 0, 0, 1, 0, 12][..]));
        }
        assert_eq!(fast(&st), 2);
        // The neighbour answers from a new MAC: the very next packet uses it.
        p.learn_from_peer(
            NeighborUpdate {
                addr: v4([198, 19, 0, 12]),
                mac: MacAddr([2, 0, 0, 9, 9, 12]),
                port: 1,
            },
            3,
        );
        let (v, o) = run(&mut p, &t, &st, 0, &f, 4);
        assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &[2, 0, 0, 9, 9, 12][..]));
        assert_eq!(fast(&st), 3);
        // 30 s without confirmation: stale. The packet still goes out (to the
        // known MAC) but on the general path, which re-probes the neighbour.
        let (v, _) = run(&mut p, &t, &st, 0, &f, 3 + 30_000);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(
            fast(&st),
            3,
            "a stale neighbour is not served from the cache"
        );
        let probes: Vec<_> = p.take_solicits().collect();
        assert_eq!(probes, vec![(1, v4([198, 19, 0, 12]))]);
    }

    /// A UDP flow of `p` whose backend is `198.19.0.<want>`: (request, output).
    fn flow_to(
        p: &mut Pipeline,
        t: &ServiceTable,
        st: &WorkerStats,
        want: u8,
    ) -> (Vec<u8>, Vec<u8>) {
        (40000u16..41000)
            .map(|port| {
                let f = frame(
                    P0,
                    ([198, 18, 0, 2], port),
                    ([198, 18, 100, 1], 80),
                    None,
                    18,
                );
                let (v, out) = run(p, t, st, 0, &f, 0);
                assert_eq!(v, Verdict::Tx(1));
                (f, out)
            })
            .find(|(_, out)| out[33] == want)
            .expect("some flow lands on the backend")
    }

    #[test]
    fn only_removing_a_backend_in_use_makes_sessions_revalidate() {
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        // The UDP Service t/1 has backends .10-.12 but `gone`; t/2's UDP
        // Service (no flow here) has the spare backends `spare`. Each
        // table's flush epoch follows `prev`'s, as a publisher sets it.
        let build = |v: u64, prev: Option<&ServiceTable>, gone: &[u8], spare: &[u8]| {
            let mut spec = spec_without(None);
            spec.services[1]
                .backends
                .retain(|b| !gone.contains(&b.addr.0[15]));
            spec.services[3].backends = spare
                .iter()
                .map(|&b| SockAddr::new(v4([198, 19, 0, b]), 8080))
                .collect();
            let mut t = ServiceTable::new(spec, v);
            if let Some(prev) = prev {
                t.inherit_flush_epoch(&prev.epoch, prev.services());
            }
            assert_eq!(t.epoch.current, v, "each table here removes a backend");
            t
        };
        let tags = |p: &Pipeline| p.sessions.iter().map(|s| s.validated).collect::<Vec<_>>();
        let to = |p: &mut Pipeline, t: &ServiceTable, f: &[u8], now: u64| {
            let (v, out) = run(p, t, &st, 0, f, now);
            assert_eq!(v, Verdict::Tx(1));
            out[33]
        };
        let t1 = build(1, None, &[], &[20, 21, 22]);
        p.on_table(&t1);
        let (a, _) = flow_to(&mut p, &t1, &st, 10);
        let (b, _) = flow_to(&mut p, &t1, &st, 11);
        let (c, _) = flow_to(&mut p, &t1, &st, 12);
        assert_eq!(p.flush_epochs(), (0, 0), "the first table is no change");
        let spare = |i: u8| SockAddr::new(v4([198, 19, 0, i]), 8080);
        for i in [20, 21, 22] {
            assert!(
                !p.sessions.may_have_udp_to(&spare(i)),
                "spare .{i} shares a count"
            );
        }
        // Removing a spare backend no session uses: carried over. No
        // session's tag moves, and every flow stays on the fast path
        // without revalidating.
        let before = tags(&p);
        let t2 = build(2, Some(&t1), &[], &[21, 22]);
        p.on_table(&t2);
        assert_eq!(p.flush_epochs(), (0, 1));
        assert_eq!(tags(&p), before);
        let fast = st.fast_path.load(Relaxed);
        assert_eq!(
            [
                to(&mut p, &t2, &a, 1),
                to(&mut p, &t2, &b, 1),
                to(&mut p, &t2, &c, 1)
            ],
            [10, 11, 12]
        );
        assert_eq!(st.fast_path.load(Relaxed), fast + 3);
        assert_eq!(tags(&p), before, "nothing revalidated");
        // After the carried epoch, removing .10 and .12 (in use): swept.
        // A's flow is flushed and moves; B's stays (on the fast path).
        let t3 = build(3, Some(&t2), &[10, 12], &[21, 22]);
        p.on_table(&t3);
        assert_eq!(p.flush_epochs(), (1, 1));
        let flushed = || st.sessions_flushed.load(Relaxed);
        let was = flushed();
        assert_eq!(to(&mut p, &t3, &a, 2), 11);
        assert_eq!(flushed(), was + 1);
        let fast = st.fast_path.load(Relaxed);
        assert_eq!(to(&mut p, &t3, &b, 2), 11);
        assert_eq!(st.fast_path.load(Relaxed), fast + 1);
        // Mid-sweep (C not revalidated yet), a spare removed: carried, and
        // C's session, whose backend the previous change removed, is still
        // flushed on its next packet.
        let t4 = build(4, Some(&t3), &[10, 12], &[22]);
        p.on_table(&t4);
        assert_eq!(p.flush_epochs(), (1, 2));
        assert_eq!(to(&mut p, &t4, &c, 3), 11);
        assert_eq!(flushed(), was + 2);
        assert_eq!(to(&mut p, &t4, &b, 3), 11);
        // A table this worker never saw removes .11; the next one, which
        // removes only a spare, follows it: swept, and B's flow is flushed.
        let t5 = build(5, Some(&t4), &[10, 11, 12], &[22]);
        let t6 = build(6, Some(&t5), &[10, 11, 12], &[]);
        p.on_table(&t6);
        assert_eq!(p.flush_epochs(), (2, 2));
        let (v, _) = run(&mut p, &t6, &st, 0, &b, 4);
        assert_ne!(v, Verdict::Tx(1), "no backend left");
        assert_eq!(flushed(), was + 3);
    }

    #[test]
    fn cached_next_hops_follow_route_changes() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        // A flow to the static backend .10, on port 1, cached.
        let (f, out) = flow_to(&mut p, &t, &st, 10);
        assert_eq!(&out[0..6], &[2, 0, 0, 1, 0, 10]);
        for now in [1, 2] {
            let (v, o) = run(&mut p, &t, &st, 0, &f, now);
            assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &[2, 0, 0, 1, 0, 10][..]));
        }
        let fast = st.fast_path.load(Relaxed);
        let misses = p.next_hop_misses();
        // The next table routes .10 through a gateway on port 0: the very
        // next packet follows the new route, still on the fast path.
        let mut spec = spec_without(None);
        spec.routes.push(crate::table::Route {
            prefix: v4([198, 19, 0, 10]),
            len: 32,
            port: 0,
            via: Some(v4([198, 18, 0, 2])),
        });
        let t2 = ServiceTable::new(spec, 2);
        p.on_table(&t2);
        let (v, o) = run(&mut p, &t2, &st, 0, &f, 3);
        assert_eq!((v, &o[0..6]), (Verdict::Tx(0), &CLIENT_MAC.0[..]));
        assert_eq!(st.fast_path.load(Relaxed), fast + 1);
        assert_eq!(p.next_hop_misses(), misses + 1, "re-resolved once");
        let (v, _) = run(&mut p, &t2, &st, 0, &f, 4);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(p.next_hop_misses(), misses + 1, "then cached again");
        // And back (a table without the route): port 1 again.
        let t3 = table(3);
        p.on_table(&t3);
        let (v, o) = run(&mut p, &t3, &st, 0, &f, 5);
        assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &[2, 0, 0, 1, 0, 10][..]));
    }

    #[test]
    fn with_a_pre_pass_the_fast_path_takes_only_its_confirmed_candidate() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        let f = frame(
            P0,
            ([198, 18, 0, 2], 40000),
            ([198, 18, 100, 1], 80),
            None,
            18,
        );
        assert_eq!(run(&mut p, &t, &st, 0, &f, 0).0, Verdict::Tx(1));
        let reference = run(&mut p, &t, &st, 0, &f, 1);
        let fast = |st: &WorkerStats| st.fast_path.load(Relaxed);
        let created = |st: &WorkerStats| st.sessions_created.load(Relaxed);
        let go = |p: &mut Pipeline, c: Option<u32>| {
            let mut b = VecBuf::new(&f);
            let v = p.process_hinted(&t, &st, 0, &mut b, 1, false, c);
            (v, b.bytes())
        };
        // No pre-pass: the fast path probes the index itself.
        let before = fast(&st);
        assert_eq!(go(&mut p, None), reference);
        assert_eq!(fast(&st), before + 1);
        // The pre-pass's candidate (steps 2 and 2b): the fast path.
        let h = p.prefetch_index(&f);
        let c = p.prefetch_session_alt(h, p.prefetch_session(h));
        assert_ne!(c, crate::session::NO_CANDIDATE);
        assert_eq!(go(&mut p, Some(c)), reference);
        assert_eq!(fast(&st), before + 2);
        // A pre-pass that named no candidate (say, the session opened after
        // it ran): no probe on the fast path; the general path finds the
        // session and translates the packet all the same.
        let n = created(&st);
        assert_eq!(go(&mut p, Some(crate::session::NO_CANDIDATE)), reference);
        assert_eq!(fast(&st), before + 2, "the general path took it");
        assert_eq!(created(&st), n, "with the existing session");
    }

    #[test]
    fn the_pre_pass_hashes_untagged_ipv4_and_ipv6_as_the_index_does() {
        // The pre-pass hashes untagged IPv4 and IPv6 straight from the
        // header (`quick_hash_v4`, `quick_hash_v6`): the same hash as the
        // index's for the tuple `quick_key` reads, and 0 where that has no
        // tuple.
        let p = pipeline(true, 1500);
        let want = |f: &[u8]| quick_key(f).map_or(0, |k| key_hash(&k));
        let udp = frame(
            P0,
            ([198, 18, 0, 2], 40000),
            ([198, 18, 100, 1], 80),
            None,
            18,
        );
        let tcp = frame(
            P0,
            ([198, 18, 3, 4], 1234),
            ([198, 18, 100, 9], 443),
            Some(tcp::ACK),
            0,
        );
        let mut sctp = udp.clone();
        sctp[14 + 9] = ip_proto::SCTP;
        let mut icmp = udp.clone();
        icmp[14 + 9] = 1;
        // IHL 6: the ports are read 4 bytes further on.
        let mut options = udp.clone();
        options[14] = 0x46;
        let mut tagged = udp[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&udp[12..]);
        let v6 = frame6(
            P0,
            (
                [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                40000,
            ),
            ([0x20, 0x01, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1], 80),
            None,
            18,
            V6::Plain,
        );
        let c6 = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        let s6 = [0x20, 0x01, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        let tcp6 = frame6(P0, (c6, 5555), (s6, 443), Some(tcp::ACK), 0, V6::Plain);
        let mut sctp6 = v6.clone();
        sctp6[14 + 6] = ip_proto::SCTP;
        let mut tagged6 = v6[..12].to_vec();
        tagged6.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged6.extend_from_slice(&v6[12..]);
        // An extension header: no tuple for the pre-pass.
        let ext6 = frame6(P0, (c6, 5555), (s6, 80), None, 18, V6::Ext);
        for (name, f) in [
            ("udp", &udp[..]),
            ("tcp", &tcp),
            ("sctp", &sctp),
            ("options", &options),
            ("tagged", &tagged),
            ("v6", &v6),
            ("tcp6", &tcp6),
            ("sctp6", &sctp6),
            ("tagged6", &tagged6),
            ("v6 up to the ports", &v6[..14 + 44]),
        ] {
            let h = p.prefetch_index(f);
            assert_ne!(h, 0, "{name}");
            assert_eq!(h, want(f), "{name}");
        }
        let k = quick_key(&udp).unwrap();
        assert_eq!(k.sport, 40000);
        assert_eq!(p.prefetch_index(&udp), key_hash(&k));
        assert_ne!(p.prefetch_index(&udp), p.prefetch_index(&tcp));
        for (name, f) in [
            ("icmp", &icmp[..]),
            ("short ip", &udp[..30]),
            ("short ports", &udp[..35]),
            ("options, short ports", &options[..39]),
            ("ext6", &ext6),
            ("short v6 ports", &v6[..14 + 43]),
            ("short v6", &v6[..14 + 39]),
        ] {
            assert_eq!(p.prefetch_index(f), 0, "{name}");
            assert_eq!(want(f), 0, "{name}");
        }
    }

    #[test]
    fn the_pre_pass_candidate_is_used_only_when_it_is_the_live_session_of_the_tuple() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        let flow = |port: u16| {
            frame(
                P0,
                ([198, 18, 0, 2], port),
                ([198, 18, 100, 1], 80),
                None,
                18,
            )
        };
        let (fa, fb) = (flow(40000), flow(40001));
        for f in [&fa, &fb] {
            assert_eq!(run(&mut p, &t, &st, 0, f, 0).0, Verdict::Tx(1));
        }
        let reference = run(&mut p, &t, &st, 0, &fa, 1);
        let cand_of = |p: &Pipeline, f: &[u8]| {
            let h = p.prefetch_index(f);
            p.prefetch_session_alt(h, p.prefetch_session(h))
        };
        let (ca, cb) = (cand_of(&p, &fa), cand_of(&p, &fb));
        assert!(p.sessions.candidate(ca).is_some());
        let go = |p: &mut Pipeline, f: &[u8], c: u32| {
            let mut b = VecBuf::new(f);
            let v = p.process_hinted(&t, &st, 0, &mut b, 1, false, Some(c));
            (v, b.bytes())
        };
        let fast = |st: &WorkerStats| st.fast_path.load(Relaxed);
        let created = |st: &WorkerStats| st.sessions_created.load(Relaxed);
        // Its own candidate: the fast path, the same bytes.
        let before = fast(&st);
        assert_eq!(go(&mut p, &fa, ca), reference);
        assert_eq!(fast(&st), before + 1);
        // Another flow's candidate: not taken for this tuple's session; the
        // general path finds the right one (no new session).
        let n = created(&st);
        assert_eq!(go(&mut p, &fa, cb), reference);
        assert_eq!(fast(&st), before + 1);
        assert_eq!(created(&st), n);
        // The candidate's session ended since the pre-pass read it: the
        // dead slot still holds the tuple, but it is not live, so the packet
        // is not translated by it: the general path opens a new session.
        let (idx, _) = p.sessions.lookup(&quick_key(&fa).unwrap()).unwrap();
        p.sessions.remove(idx);
        let n = created(&st);
        let (v, _) = go(&mut p, &fa, ca);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(created(&st), n + 1, "a new session, not the dead one");
        assert_eq!(fast(&st), before + 1);
    }

    #[test]
    fn nic_checksum_verdicts() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        let f = frame(
            P0,
            ([198, 18, 0, 2], 40000),
            ([198, 18, 100, 1], 80),
            None,
            18,
        );
        assert_eq!(run(&mut p, &t, &st, 0, &f, 0).0, Verdict::Tx(1));
        let mut bad = f.clone();
        bad[14 + 10] ^= 0x5a;
        let go = |p: &mut Pipeline, f: &[u8], c: RxChecksum| {
            let mut b = VecBuf::new(f);
            b.set_rx_ip_checksum(c);
            let v = p.process(&t, &st, 0, &mut b, 1, false);
            (v, b.bytes())
        };
        let fast = |st: &WorkerStats| st.fast_path.load(Relaxed);
        // A good header: the fast path whatever the NIC says (a `Bad`
        // verdict is not trusted over software, as without offloads).
        let reference = run(&mut p, &t, &st, 0, &f, 1);
        for c in [
            RxChecksum::Unknown,
            RxChecksum::Good,
            RxChecksum::Bad,
            RxChecksum::None,
        ] {
            let before = fast(&st);
            let (v, out) = go(&mut p, &f, c);
            assert_eq!((v, &out), (reference.0, &reference.1), "{c:?}");
            assert_eq!(fast(&st), before + 1, "{c:?}");
        }
        // A bad header checksum is dropped (the worker counts the verdict)
        // unless the NIC vouched for it.
        for c in [RxChecksum::Unknown, RxChecksum::Bad, RxChecksum::None] {
            let before = fast(&st);
            assert_eq!(
                go(&mut p, &bad, c).0,
                Verdict::Drop(DropReason::BadChecksum),
                "{c:?}"
            );
            assert_eq!(fast(&st), before, "{c:?}");
        }
        // `Good`: the NIC's word is taken, the header is not summed again.
        let before = fast(&st);
        assert_eq!(go(&mut p, &bad, RxChecksum::Good).0, Verdict::Tx(1));
        assert_eq!(fast(&st), before + 1);
    }

    /// A table with `n` static neighbours on port 1 (198.19.x.y, all on-link).
    fn wide_table(n: u32) -> (ServiceTable, Vec<Addr>) {
        wide_table_of((0..n).map(|i| v4([198, 19, 1 + (i / 250) as u8, 1 + (i % 250) as u8])))
    }

    /// [`wide_table`] with IPv6 neighbours (2001:2:1::100 on, on-link).
    fn wide_table6(n: u16) -> (ServiceTable, Vec<Addr>) {
        wide_table_of((0..n).map(|i| v6(1, 100 + i)))
    }

    /// A next hop's port and destination MAC.
    fn pm(h: Option<NextHop>) -> Option<(u16, MacAddr)> {
        h.map(|h| {
            let mut m = [0; 6];
            m.copy_from_slice(&h.l2()[..6]);
            (h.port(), MacAddr(m))
        })
    }

    fn wide_table_of(addrs: impl Iterator<Item = Addr>) -> (ServiceTable, Vec<Addr>) {
        let addrs: Vec<Addr> = addrs.collect();
        let mut spec = spec_without(None);
        spec.interfaces[1].prefix_len = 16;
        spec.neighbors
            .extend(addrs.iter().map(|&addr| StaticNeighbor {
                addr,
                mac: MacAddr([2, 0, 1, 0, 0, 1]),
                port: 1,
            }));
        (ServiceTable::new(spec, 1), addrs)
    }

    #[test]
    fn next_hop_cache_holds_as_many_destinations_as_the_neighbour_cache() {
        // 6,000 next hops (far more than the old 256-slot cache) in a
        // pipeline whose neighbour cache is sized for them: each is
        // resolved once, then every lookup hits.
        // The same for 6,000 IPv6 next hops.
        let (t6, addrs6) = wide_table6(6000);
        let mut p6 = bare_pipeline(1500, Some(8192));
        p6.on_table(&t6);
        for round in 0..3 {
            for a in &addrs6 {
                assert_eq!(
                    pm(p6.egress6_for(&t6, u128::from_ne_bytes(a.0), round)),
                    Some((1, MacAddr([2, 0, 1, 0, 0, 1])))
                );
            }
            assert_eq!(p6.next_hop_misses(), 6000, "round {round}");
        }
        let (t, addrs) = wide_table(6000);
        let mut p = bare_pipeline(1500, Some(8192));
        p.on_table(&t);
        assert_eq!(p.next_hop_cache_bytes(), 8192 * (64 + 128));
        for round in 0..3 {
            for a in &addrs {
                assert_eq!(
                    pm(p.egress_v4(&t, u32::from_ne_bytes(a.v4_octets()), round)),
                    Some((1, MacAddr([2, 0, 1, 0, 0, 1])))
                );
            }
            assert_eq!(p.next_hop_misses(), 6000, "round {round}");
        }
        // With that many neighbours the worker's pre-pass prefetches next-hop
        // lines (any candidate value is a safe hint); with few it does not.
        let late = p.late_prefetch();
        assert!(late.next_hop && !late.snat);
        let all = LatePrefetch {
            next_hop: true,
            snat: true,
        };
        for c in [0, 1, 12_345, u32::MAX - 1, crate::session::NO_CANDIDATE] {
            p.prefetch_late(c, all);
        }
        // Default-sized pipelines keep a small cache.
        let mut small = pipeline(true, 1500);
        small.on_table(&table(1));
        assert!(!small.late_prefetch().any());
        assert_eq!(small.next_hop_cache_bytes(), 4096 * (64 + 128));
    }

    #[test]
    fn next_hops_carry_the_ports_facts_and_tagged_ports_stay_on_the_general_path() {
        // A cached next hop holds the frame's Ethernet addresses (the
        // neighbour's, then the egress port's) and the port's MTU, so the
        // fast path reads nothing else about the port.
        let t = table(1);
        let mut p = pipeline(true, 1400);
        p.on_table(&t);
        let b = u32::from_ne_bytes([198, 19, 0, 10]);
        let facts = |h: Option<NextHop>| h.map(|h| (h.port(), h.l2(), h.mtu()));
        let b6 = u128::from_ne_bytes(v6(1, 10).0);
        let mut l2 = [0u8; 12];
        l2[6..].copy_from_slice(&P1.0);
        for (v6, neighbour) in [(false, [2, 0, 0, 1, 0, 10]), (true, [2, 0, 0, 1, 6, 10])] {
            l2[..6].copy_from_slice(&neighbour);
            for round in 1..=2 {
                let h = if v6 {
                    p.egress6_for(&t, b6, round)
                } else {
                    p.egress_v4(&t, b, round)
                };
                assert_eq!(facts(h), Some((1, l2, 1400)), "IPv6 {v6}, round {round}");
            }
            // The second lookup from the cache.
            assert_eq!(p.next_hop_misses(), 1 + u64::from(v6));
        }
        // The words write the same 12 bytes, and keep any port and MTU.
        let h = NextHop::new(
            0xfedc,
            MacAddr([1, 2, 3, 4, 5, 6]),
            MacAddr([7, 8, 9, 10, 11, 12]),
            9000,
        )
        .unwrap();
        let mut f = [0xaau8; 14];
        h.write_l2(&mut f);
        assert_eq!(f, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0xaa, 0xaa]);
        assert_eq!((h.port(), h.mtu()), (0xfedc, 9000));

        // Behind a tagged port: never cached, and every packet goes the
        // general path's way (which writes the tag) — the same bytes as a
        // pipeline without the fast path.
        let tagged = |fast: bool| {
            let port1 = PortInfo {
                mac: P1,
                vlan: Some(100),
                mtu: 1500,
            };
            let mut p = two_port_pipeline(port1, None);
            p.set_fast_path(fast);
            p.on_table(&t);
            p
        };
        let (mut fast, mut slow) = (tagged(true), tagged(false));
        assert_eq!(fast.egress_v4(&t, b, 1), None);
        assert_eq!(fast.egress_v4(&t, b, 2), None);
        assert_eq!(fast.next_hop_misses(), 2, "not cached");
        let (sf, ss) = (WorkerStats::default(), WorkerStats::default());
        for port in [40000, 40001, 40002] {
            let f = frame(
                P0,
                ([198, 18, 0, 2], port),
                ([198, 18, 100, 1], 80),
                None,
                18,
            );
            for now in 0..4 {
                let (vf, of) = run(&mut fast, &t, &sf, 0, &f, now);
                let (vs, os) = run(&mut slow, &t, &ss, 0, &f, now);
                assert_eq!(vf, Verdict::Tx(1));
                assert_eq!((vf, &of), (vs, &os));
                assert_eq!(&of[12..16], &[0x81, 0x00, 0, 100], "tagged");
            }
        }
        assert_eq!(sf.fast_path.load(Relaxed), 0);
    }

    #[test]
    fn next_hop_cache_stamp_wrap_forgets_every_entry() {
        let t = table(1);
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        let b = v4([198, 19, 0, 12]);
        assert_eq!(
            pm(p.egress_v4(&t, u32::from_ne_bytes(b.v4_octets()), 1)),
            Some((1, MacAddr([2, 0, 0, 1, 0, 12])))
        );
        let b6 = v6(1, 12);
        assert_eq!(
            pm(p.egress6_for(&t, u128::from_ne_bytes(b6.0), 1)),
            Some((1, MacAddr([2, 0, 0, 1, 6, 12])))
        );
        let stamp = p.egress.stamp;
        // 2^32 - 1 changes later the stamp comes round again to the one the
        // entry was resolved under: it must not be taken for current.
        p.egress.stamp = stamp.wrapping_sub(1).wrapping_sub(1);
        p.learn_from_peer(
            NeighborUpdate {
                addr: b,
                mac: MacAddr([2, 0, 0, 9, 9, 12]),
                port: 1,
            },
            2,
        );
        assert_eq!(
            pm(p.egress_v4(&t, u32::from_ne_bytes(b.v4_octets()), 3)),
            Some((1, MacAddr([2, 0, 0, 9, 9, 12])))
        );
        // The IPv6 sets are emptied too.
        p.learn_from_peer(
            NeighborUpdate {
                addr: b6,
                mac: MacAddr([2, 0, 0, 9, 6, 12]),
                port: 1,
            },
            2,
        );
        p.egress.stamp = stamp.wrapping_sub(1).wrapping_sub(1);
        p.egress.sets.fill(EgressSet::default());
        p.learn_from_peer(
            NeighborUpdate {
                addr: b,
                mac: MacAddr([2, 0, 0, 9, 9, 12]),
                port: 1,
            },
            2,
        );
        assert_eq!(
            pm(p.egress6_for(&t, u128::from_ne_bytes(b6.0), 3)),
            Some((1, MacAddr([2, 0, 0, 9, 6, 12])))
        );
    }

    /// An IPv6 flow from client port `cport` to VIP `2001:2:0:100::<svc>`.
    fn flow6(cport: u16, svc: u16, tcp: Option<u8>, how: V6) -> Vec<u8> {
        frame6(P0, (a6(0, 2), cport), (a6(0x100, svc), 80), tcp, 18, how)
    }

    /// A UDP IPv6 flow of `p` to Service 1 whose backend is
    /// `2001:2:1::<want>`: (request, output).
    fn flow6_to(
        p: &mut Pipeline,
        t: &ServiceTable,
        st: &WorkerStats,
        want: u8,
    ) -> (Vec<u8>, Vec<u8>) {
        (40000u16..41000)
            .map(|port| {
                let f = flow6(port, 1, None, V6::Plain);
                let (v, out) = run(p, t, st, 0, &f, 0);
                assert_eq!(v, Verdict::Tx(1));
                (f, out)
            })
            .find(|(_, out)| out[53] == want)
            .expect("some flow lands on the backend")
    }

    /// The L4 checksum of an untagged IPv6 TCP/UDP frame checks out.
    fn l4_ok6(d: &[u8]) -> bool {
        let ip = &d[14..];
        let n = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        checksum::verify_l4_v6(
            ip[8..24].try_into().unwrap(),
            ip[24..40].try_into().unwrap(),
            ip[6],
            &ip[40..40 + n],
        )
    }

    /// Runs `f` through the fast and the slow pipeline: the same verdict,
    /// bytes, counters and probes; returns the verdict, the bytes and how
    /// many packets the fast path took.
    #[allow(clippy::too_many_arguments)]
    fn both(
        fast: &mut Pipeline,
        slow: &mut Pipeline,
        t: &ServiceTable,
        sf: &WorkerStats,
        ss: &WorkerStats,
        port: u16,
        f: &[u8],
        now: u64,
    ) -> (Verdict, Vec<u8>, u64) {
        let before = sf.fast_path.load(Relaxed);
        let (vf, bf) = run(fast, t, sf, port, f, now);
        let (vs, bs) = run(slow, t, ss, port, f, now);
        assert_eq!((vf, &bf), (vs, &bs));
        assert_eq!(counters(sf), counters(ss));
        let (pf, ps): (Vec<_>, Vec<_>) = (
            fast.take_solicits().collect(),
            slow.take_solicits().collect(),
        );
        assert_eq!(pf, ps);
        (vf, bf, sf.fast_path.load(Relaxed) - before)
    }

    #[test]
    fn established_v6_packets_take_the_fast_path() {
        let t = table(1);
        let (sf, ss) = (WorkerStats::default(), WorkerStats::default());
        let mut fast = pipeline(true, 1500);
        let mut slow = pipeline(false, 1500);
        fast.on_table(&t);
        slow.on_table(&t);
        // DNAT-only and masqueraded, UDP and TCP.
        for (svc, tcp) in [
            (1, None),
            (1, Some(tcp::ACK)),
            (2, None),
            (2, Some(tcp::ACK)),
        ] {
            let open = flow6(40000, svc, tcp.map(|_| tcp::SYN), V6::Plain);
            let (v, out, n) = both(&mut fast, &mut slow, &t, &sf, &ss, 0, &open, 0);
            assert_eq!(
                (v, n),
                (Verdict::Tx(1), 0),
                "the first packet opens the session"
            );
            let f = flow6(40000, svc, tcp, V6::Plain);
            for i in 1..=5 {
                let (v, o, n) = both(&mut fast, &mut slow, &t, &sf, &ss, 0, &f, i);
                assert_eq!((v, n), (Verdict::Tx(1), 1), "{svc} {tcp:?}");
                assert_eq!(o[21], 63, "hop limit");
                assert_eq!(
                    &o[0..12],
                    &[&[2, 0, 0, 1, 6, o[53]][..], &P1.0[..]].concat()
                );
                assert!(l4_ok6(&o));
            }
            // The backend's reply, reverse-translated on the fast path too.
            let ip = &out[14..];
            let r = frame6(
                P1,
                (
                    ip[24..40].try_into().unwrap(),
                    u16::from_be_bytes([ip[42], ip[43]]),
                ),
                (
                    ip[8..24].try_into().unwrap(),
                    u16::from_be_bytes([ip[40], ip[41]]),
                ),
                tcp,
                18,
                V6::Plain,
            );
            let (v, back, n) = both(&mut fast, &mut slow, &t, &sf, &ss, 1, &r, 10);
            assert_eq!((v, n), (Verdict::Tx(0), 1));
            assert_eq!(&back[22..38], &a6(0x100, svc), "source is the VIP again");
            assert_eq!(&back[38..54], &a6(0, 2), "to the client");
            assert_eq!(&back[56..58], &40000u16.to_be_bytes());
            assert_eq!(&back[0..6], &CLIENT_MAC.0);
            assert!(l4_ok6(&back));
        }
        assert_eq!(sf.fast_path.load(Relaxed), 24);
        assert_eq!(ss.fast_path.load(Relaxed), 0);
    }

    #[test]
    fn v6_packets_the_fast_path_leaves_to_the_general_path() {
        let t = table(1);
        let (sf, ss) = (WorkerStats::default(), WorkerStats::default());
        let mut fast = pipeline(true, 1000);
        let mut slow = pipeline(false, 1000);
        fast.on_table(&t);
        slow.on_table(&t);
        let udp = flow6(40000, 1, None, V6::Plain);
        let tcp_open = flow6(40001, 1, Some(tcp::SYN), V6::Plain);
        let (v, out, _) = both(&mut fast, &mut slow, &t, &sf, &ss, 0, &udp, 0);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(
            both(&mut fast, &mut slow, &t, &sf, &ss, 0, &tcp_open, 0).0,
            Verdict::Tx(1)
        );
        let flow = |cport, tcp, payload, how| {
            frame6(P0, (a6(0, 2), cport), (a6(0x100, 1), 80), tcp, payload, how)
        };
        // A plain one is the fast path's (the control).
        assert_eq!(both(&mut fast, &mut slow, &t, &sf, &ss, 0, &udp, 1).2, 1);
        let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
            (
                "extension header",
                flow(40000, None, 18, V6::Ext),
                Verdict::Tx(1),
            ),
            (
                "hop limit 1",
                flow(40000, None, 18, V6::Hop1),
                Verdict::Drop(DropReason::TtlExceeded),
            ),
            (
                "UDP checksum 0",
                flow(40000, None, 18, V6::UdpZero),
                Verdict::Tx(1),
            ),
            (
                "over the MTU",
                flow(40000, None, 1000, V6::Plain),
                Verdict::Tx(0),
            ),
            (
                "TCP FIN",
                flow(40001, Some(tcp::FIN | tcp::ACK), 18, V6::Plain),
                Verdict::Tx(1),
            ),
            (
                "TCP SYN",
                flow(40001, Some(tcp::SYN), 18, V6::Plain),
                Verdict::Tx(1),
            ),
            (
                "TCP RST",
                flow(40001, Some(tcp::RST), 18, V6::Plain),
                Verdict::Tx(1),
            ),
        ];
        for (what, f, want) in cases {
            let (v, o, n) = both(&mut fast, &mut slow, &t, &sf, &ss, 0, &f, 2);
            assert_eq!((v, n), (want, 0), "{what}");
            if what == "UDP checksum 0" {
                assert_eq!(&o[60..62], &[0, 0], "passed on as it is");
            }
        }
        assert_eq!(sf.too_big_sent.load(Relaxed), 1, "Packet Too Big");
        // IPv4-mapped addresses of an IPv4 session in an IPv6 header.
        let f4 = frame(
            P0,
            ([198, 18, 0, 2], 40002),
            ([198, 18, 100, 1], 80),
            None,
            18,
        );
        assert_eq!(
            both(&mut fast, &mut slow, &t, &sf, &ss, 0, &f4, 2).0,
            Verdict::Tx(1)
        );
        let mapped = |a: [u8; 4]| {
            let mut m = [0u8; 16];
            m[10..12].copy_from_slice(&[0xff, 0xff]);
            m[12..].copy_from_slice(&a);
            m
        };
        let m = frame6(
            P0,
            (mapped([198, 18, 0, 2]), 40002),
            (mapped([198, 18, 100, 1]), 80),
            None,
            18,
            V6::Plain,
        );
        assert_eq!(
            both(&mut fast, &mut slow, &t, &sf, &ss, 0, &m, 2).2,
            0,
            "IPv4-mapped"
        );
        // A UDP flow whose backend a new table removed: flushed by the general path.
        let backend = out[53];
        let t2 = table_without(2, Some(backend));
        fast.on_table(&t2);
        slow.on_table(&t2);
        let (v, moved, n) = both(&mut fast, &mut slow, &t2, &sf, &ss, 0, &udp, 3);
        assert_eq!((v, n), (Verdict::Tx(1), 0));
        assert_ne!(moved[53], backend, "moved off the removed backend");
        assert_eq!(sf.sessions_flushed.load(Relaxed), 1);
        // Then the fast path's again.
        assert_eq!(both(&mut fast, &mut slow, &t2, &sf, &ss, 0, &udp, 4).2, 1);
    }

    #[test]
    fn ipv6_words_classify_addresses_as_addr_does() {
        // `fast_v6` tells IPv4-mapped and multicast destinations apart on
        // the address read as one native-endian `u128` (`Ep6::addr`); it
        // must agree with `Addr` on every address, including the edges of
        // both prefixes, and the endpoint's words must be its bytes.
        let mut addrs = vec![
            Addr::v4([198, 18, 0, 1]),
            Addr::v4([0, 0, 0, 0]),
            Addr::v4([255, 255, 255, 255]),
            v6(1, 12),
            v6(0x100, 1),
        ];
        for (i, b) in [
            (10, 0xfe),
            (11, 0xfe),
            (9, 1),
            (0, 0xfe),
            (0, 0xff),
            (15, 0xff),
        ] {
            let mut a = Addr::v4([198, 18, 0, 1]);
            a.0[i] = b;
            addrs.push(a);
            let mut a = Addr([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            a.0[i] = b;
            addrs.push(a);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut a = [0u8; 16];
            for b in a.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            addrs.push(Addr(a));
        }
        for a in addrs {
            let w = u128::from_ne_bytes(a.0);
            assert_eq!(w & V4_MAPPED_MASK == V4_MAPPED, a.is_v4(), "{a:?}");
            if !a.is_v4() {
                assert_eq!(
                    w & MULTICAST_MASK == MULTICAST_MASK,
                    a.is_multicast_or_broadcast(),
                    "{a:?}"
                );
            }
            let e = Ep6::of(&SockAddr::new(a, 8080));
            assert_eq!(e.is_some(), !a.is_v4(), "{a:?}");
            if let Some(e) = e {
                assert_eq!(
                    (e.addr.to_ne_bytes(), e.port.to_ne_bytes()),
                    (a.0, 8080u16.to_be_bytes())
                );
            }
        }
    }

    #[test]
    fn translations_that_mix_families_are_left_to_the_general_path() {
        // A table that maps an IPv4 VIP to an IPv6 backend and an IPv6 VIP
        // to an IPv4 one (the control plane never builds one: each family
        // gets its own EndpointSlices; a hand-written spec could). Whatever
        // the general path makes of such a flow, the fast path must leave
        // every packet of it to the general path.
        let mut spec = spec_without(None);
        let mixed = |name: &str, vip: Addr, backend: Addr| {
            service(
                name.into(),
                Proto::Udp,
                SockAddr::new(vip, 80),
                vec![SockAddr::new(backend, 8080)],
                false,
            )
        };
        // The IPv6 backend's last four bytes are a routed IPv4 backend with
        // a static neighbour (198.19.0.10): read as IPv4, it would be sent.
        let mut b6 = a6(1, 0);
        b6[12..].copy_from_slice(&[198, 19, 0, 10]);
        spec.services
            .push(mixed("t/4to6", v4([198, 18, 100, 7]), Addr::v6(b6)));
        spec.services
            .push(mixed("t6/6to4", v6(0x100, 7), v4([198, 19, 0, 10])));
        let t = ServiceTable::new(spec, 1);
        let (sf, ss) = (WorkerStats::default(), WorkerStats::default());
        let mut fast = pipeline(true, 1500);
        let mut slow = pipeline(false, 1500);
        fast.on_table(&t);
        slow.on_table(&t);
        let f4 = frame(
            P0,
            ([198, 18, 0, 2], 41000),
            ([198, 18, 100, 7], 80),
            None,
            18,
        );
        let f6 = frame6(
            P0,
            (a6(0, 2), 41000),
            (a6(0x100, 7), 80),
            None,
            18,
            V6::Plain,
        );
        for (what, f) in [("4 to 6", &f4), ("6 to 4", &f6)] {
            let created = sf.sessions_created.load(Relaxed);
            for now in 0..3 {
                assert_eq!(
                    both(&mut fast, &mut slow, &t, &sf, &ss, 0, f, now).2,
                    0,
                    "{what}: packet {now}"
                );
            }
            assert_eq!(
                sf.sessions_created.load(Relaxed),
                created + 1,
                "{what}: the general path opened a session (so the fast path found one)"
            );
        }
    }

    #[test]
    fn cached_v6_next_hops_follow_neighbour_changes_and_ageing() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        // A UDP flow whose backend is the learned (ageing) neighbour ::12.
        let (f, out) = flow6_to(&mut p, &t, &st, 12);
        let mac = [2, 0, 0, 1, 6, 12];
        assert_eq!(&out[0..6], &mac);
        let _ = p.take_solicits().count();
        let fast = |st: &WorkerStats| st.fast_path.load(Relaxed);
        for now in [1, 2] {
            let (v, o) = run(&mut p, &t, &st, 0, &f, now);
            assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &mac[..]));
        }
        assert_eq!(fast(&st), 2);
        // The neighbour answers from a new MAC: the very next packet uses it.
        p.learn_from_peer(
            NeighborUpdate {
                addr: v6(1, 12),
                mac: MacAddr([2, 0, 0, 9, 9, 12]),
                port: 1,
            },
            3,
        );
        let (v, o) = run(&mut p, &t, &st, 0, &f, 4);
        assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &[2, 0, 0, 9, 9, 12][..]));
        assert_eq!(fast(&st), 3);
        // Stale: out to the known MAC, but on the general path, which re-probes.
        let (v, _) = run(&mut p, &t, &st, 0, &f, 3 + 30_000);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(
            fast(&st),
            3,
            "a stale neighbour is not served from the cache"
        );
        let probes: Vec<_> = p.take_solicits().collect();
        assert_eq!(probes, vec![(1, v6(1, 12))]);
    }

    #[test]
    fn cached_v6_next_hops_follow_route_changes() {
        let t = table(1);
        let st = WorkerStats::default();
        let mut p = pipeline(true, 1500);
        p.on_table(&t);
        // A flow to the static backend ::10, on port 1, cached.
        let (f, out) = flow6_to(&mut p, &t, &st, 10);
        let mac = [2, 0, 0, 1, 6, 10];
        assert_eq!(&out[0..6], &mac);
        for now in [1, 2] {
            let (v, o) = run(&mut p, &t, &st, 0, &f, now);
            assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &mac[..]));
        }
        let fast = st.fast_path.load(Relaxed);
        assert_eq!(fast, 2);
        let misses = p.next_hop_misses();
        // The next table routes ::10 through a gateway on port 0 (the
        // client): the very next packet follows, still on the fast path.
        let mut spec = spec_without(None);
        spec.routes.push(crate::table::Route {
            prefix: v6(1, 10),
            len: 128,
            port: 0,
            via: Some(v6(0, 2)),
        });
        let t2 = ServiceTable::new(spec, 2);
        p.on_table(&t2);
        let (v, o) = run(&mut p, &t2, &st, 0, &f, 3);
        assert_eq!((v, &o[0..6]), (Verdict::Tx(0), &CLIENT_MAC.0[..]));
        assert_eq!(st.fast_path.load(Relaxed), fast + 1);
        assert_eq!(p.next_hop_misses(), misses + 1, "re-resolved once");
        let (v, _) = run(&mut p, &t2, &st, 0, &f, 4);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(p.next_hop_misses(), misses + 1, "then cached again");
        // And back: port 1 again.
        let t3 = table(3);
        p.on_table(&t3);
        let (v, o) = run(&mut p, &t3, &st, 0, &f, 5);
        assert_eq!((v, &o[0..6]), (Verdict::Tx(1), &mac[..]));
        assert_eq!(st.fast_path.load(Relaxed), fast + 3);
    }
}
