//! Pipeline invariants as properties (issue 6, "Bad input"):
//!
//! - `nat_round_trips_restore_the_tuple`: any client flow (IPv4/IPv6,
//!   TCP/UDP/SCTP, with or without masquerade, any number of workers and any
//!   receiving worker) is translated to a backend, and the backend's answer
//!   comes back to the client as exactly the tuple the client sent to.
//! - `every_emitted_frame_has_valid_checksums`: every frame the pipeline
//!   transmits (translated packets, replies, generated RST / ICMP errors /
//!   neighbour answers, translated ICMP errors, solicitations) verifies with
//!   the small reference checksum code below, which shares nothing with the
//!   product's incremental checksum code.
//! - `corrupted_frame_sequences_never_panic`: sequences of mutated frames
//!   (byte flips, truncations, bad length fields and IHL, IPv6 extension
//!   chains, fragments, ICMP errors) through long-lived pipelines never panic
//!   and each ends in exactly one final verdict, drops counted.
use super::sctp_flows::{parse_sctp, sctp_frame};
use super::*;

const MTU_CLIENT_SIDE: u16 = 1280;

fn client_ip(v6: bool, host: u8) -> IpAddr {
    if v6 {
        let mut o = client6().octets();
        o[15] = host;
        ip6(Ipv6Addr::from(o))
    } else {
        ip4([198, 18, 0, host])
    }
}

fn client_mac(host: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0xc0, host]
}

fn node1(is_v6: bool) -> IpAddr {
    if is_v6 {
        ip6(v6("2001:2:0:1::1"))
    } else {
        ip4(NODE1)
    }
}

fn vip(v6: bool, empty: bool) -> IpAddr {
    match (v6, empty) {
        (false, false) => ip4(VIP4),
        (false, true) => ip4(EMPTY4),
        (true, false) => ip6(vip6()),
        (true, true) => ip6(empty6()),
    }
}

/// The test topology with clients .3-.254 on port 0 in both families, every
/// Service masqueraded when `masq`.
fn inv_table(masq: bool) -> ServiceTable {
    let mut s = spec();
    for h in 3..=254u8 {
        for v6 in [false, true] {
            s.neighbors.push(StaticNeighbor {
                addr: Addr::from(client_ip(v6, h)),
                mac: MacAddr(client_mac(h)),
                port: 0,
            });
        }
    }
    for sv in &mut s.services {
        sv.masquerade = masq;
    }
    ServiceTable::new(s, 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
    Sctp,
}

impl L4 {
    fn from_index(i: u8) -> Self {
        [L4::Tcp, L4::Udp, L4::Sctp][i as usize % 3]
    }
    /// (Service port, backend target port) of the test Services.
    fn ports(self) -> (u16, u16) {
        match self {
            L4::Tcp => (80, 8080),
            L4::Udp => (53, 5353),
            L4::Sctp => (80, 9999),
        }
    }
}

/// One L4 packet of `l4` from `src:sport` to `dst:dport`.
#[allow(clippy::too_many_arguments)]
fn l4_frame(
    l4: L4,
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    tag: u32,
    payload: &[u8],
) -> Vec<u8> {
    match l4 {
        L4::Tcp => tcp_frame(
            smac,
            dmac,
            src,
            dst,
            sport,
            dport,
            flags,
            tag,
            tag.wrapping_add(1),
            64,
            payload,
        ),
        L4::Udp => udp_frame(smac, dmac, src, dst, sport, dport, 64, payload),
        // A DATA chunk needs at least one byte of user data.
        L4::Sctp => {
            let data: &[u8] = if payload.is_empty() { b"x" } else { payload };
            sctp_frame(smac, dmac, src, dst, sport, dport, tag, &[(0, data)])
        }
    }
}

/// (dst MAC, src, sport, dst, dport, payload) of an emitted frame, its
/// checksums verified by etherparse (TCP/UDP) or the CRC32c oracle (SCTP).
type Tuple = ([u8; 6], IpAddr, u16, IpAddr, u16, Vec<u8>);

fn tuple_of(l4: L4, frame: &[u8]) -> Tuple {
    match l4 {
        L4::Sctp => {
            let o = parse_sctp(frame);
            let data = o.chunks.first().map(|c| c.1.clone()).unwrap_or_default();
            (o.dst_mac, o.src, o.sport, o.dst, o.dport, data)
        }
        _ => {
            let o = parse(frame);
            (
                o.dst_mac,
                o.src.unwrap(),
                o.sport,
                o.dst.unwrap(),
                o.dport,
                o.payload,
            )
        }
    }
}

/// Several workers over one table, fed like the worker loop feeds them.
struct Workers {
    pipes: Vec<Pipeline>,
    stats: Vec<WorkerStats>,
    t: ServiceTable,
}

impl Workers {
    fn new(t: ServiceTable, n: u16, ports: Vec<PortInfo>, sessions: usize) -> Self {
        let pipes = (0..n)
            .map(|id| {
                let mut p = Pipeline::new(
                    id,
                    n,
                    ports.clone(),
                    PipelineConfig {
                        sessions,
                        ..Default::default()
                    },
                );
                p.on_table(&t);
                p
            })
            .collect();
        Workers {
            pipes,
            stats: (0..n).map(|_| WorkerStats::default()).collect(),
            t,
        }
    }

    /// Processes `frame`, received by worker `rx` on `port`, to its final
    /// verdict: a hand-off is processed by the worker it names (as handed
    /// off), a drop is counted. Returns the verdict, the bytes, the worker.
    fn deliver(&mut self, rx: usize, port: u16, frame: &[u8], now: u64) -> (Verdict, Vec<u8>) {
        let mut b = VecBuf::new(frame);
        let mut w = rx % self.pipes.len();
        let mut handed_off = false;
        loop {
            let v = self.pipes[w].process(&self.t, &self.stats[w], port, &mut b, now, handed_off);
            match v {
                Verdict::HandOff(to) => {
                    assert!(
                        !handed_off,
                        "handed-off packet handed off again: {frame:02x?}"
                    );
                    assert!(
                        (to as usize) < self.pipes.len() && to as usize != w,
                        "hand-off from {w} to {to}"
                    );
                    handed_off = true;
                    w = to as usize;
                }
                Verdict::Drop(r) => {
                    self.stats[w].count_drop(r);
                    return (v, b.bytes());
                }
                _ => return (v, b.bytes()),
            }
        }
    }

    /// Every solicitation the workers asked for, built.
    fn solicitations(&mut self) -> Vec<Vec<u8>> {
        let mut out = vec![];
        for p in &mut self.pipes {
            let wanted: Vec<_> = p.take_solicits().collect();
            for (port, addr) in wanted {
                let mut buf = [0u8; 128];
                if let Some(n) = p.build_solicit(&self.t, port, addr, &mut buf) {
                    out.push(buf[..n].to_vec());
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Reference checksums: plain RFC 1071 sums and the `crc` crate's CRC32c,
// written from the RFCs, sharing nothing with `crate::packet::checksum`.

fn rfc1071(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for c in chunks {
        let mut i = 0;
        while i + 1 < c.len() {
            sum += u64::from(c[i]) << 8 | u64::from(c[i + 1]);
            i += 2;
        }
        if i < c.len() {
            sum += u64::from(c[i]) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn crc32c(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(data)
}

/// Verifies every checksum of an emitted Ethernet frame; `Err` says which
/// one is wrong. Non-first fragments (no L4 header) have no L4 checksum to
/// verify; first fragments neither (the checksum covers the whole datagram).
fn verify_frame(f: &[u8]) -> Result<(), String> {
    if f.len() < 14 {
        return Err("shorter than Ethernet".into());
    }
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    if et == 0x8100 {
        et = u16::from_be_bytes([f[16], f[17]]);
        l3 = 18;
    }
    let ip = &f[l3..];
    match et {
        0x0806 => Ok(()),
        0x0800 => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return Err("bad IPv4 header".into());
            }
            if rfc1071(&[&ip[..ihl]]) != 0 {
                return Err("IPv4 header checksum".into());
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if total < ihl || total > ip.len() {
                return Err(format!("IPv4 total length {total}"));
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x3fff != 0 {
                return Ok(());
            }
            let (src, dst) = (&ip[12..16], &ip[16..20]);
            let seg = &ip[ihl..total];
            let len = (seg.len() as u32).to_be_bytes();
            let pseudo = |proto: u8| [src, dst, &[0, proto], &len[2..]].concat();
            verify_l4(ip[9], seg, &pseudo(ip[9]), true)
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return Err("bad IPv6 header".into());
            }
            let end = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if end > ip.len() {
                return Err("IPv6 payload length".into());
            }
            let (mut nh, mut off) = (ip[6], 40);
            loop {
                match nh {
                    0 | 43 | 60 => {
                        if off + 8 > end {
                            return Err("truncated extension header".into());
                        }
                        (nh, off) = (ip[off], off + (ip[off + 1] as usize + 1) * 8);
                    }
                    44 => {
                        if off + 8 > end {
                            return Err("truncated fragment header".into());
                        }
                        let fo = u16::from_be_bytes([ip[off + 2], ip[off + 3]]);
                        if fo & 0xfff9 != 0 {
                            return Ok(()); // a fragment: checksum covers the datagram
                        }
                        (nh, off) = (ip[off], off + 8);
                    }
                    _ => break,
                }
            }
            if off > end {
                return Err("extension headers past the payload".into());
            }
            let seg = &ip[off..end];
            let len = (seg.len() as u32).to_be_bytes();
            let pseudo = [&ip[8..24], &ip[24..40], &len[..], &[0, 0, 0, nh]].concat();
            verify_l4(nh, seg, &pseudo, false)
        }
        _ => Err(format!("ethertype {et:#06x}")),
    }
}

fn verify_l4(proto: u8, seg: &[u8], pseudo: &[u8], v4: bool) -> Result<(), String> {
    match proto {
        6 => {
            if seg.len() < 20 || rfc1071(&[pseudo, seg]) != 0 {
                return Err("TCP checksum".into());
            }
        }
        17 => {
            if seg.len() < 8 || u16::from_be_bytes([seg[4], seg[5]]) as usize != seg.len() {
                return Err("UDP length".into());
            }
            let c = u16::from_be_bytes([seg[6], seg[7]]);
            if c == 0 && v4 {
                return Ok(());
            }
            if c == 0 || rfc1071(&[pseudo, seg]) != 0 {
                return Err("UDP checksum".into());
            }
        }
        1 => {
            if seg.len() < 8 || rfc1071(&[seg]) != 0 {
                return Err("ICMP checksum".into());
            }
            if matches!(seg[0], 3 | 11 | 12) {
                verify_quote(&seg[8..]).map_err(|e| format!("quoted packet: {e}"))?;
            }
        }
        58 => {
            if seg.len() < 4 || rfc1071(&[pseudo, seg]) != 0 {
                return Err("ICMPv6 checksum".into());
            }
            if (1..=4).contains(&seg[0]) && seg.len() >= 8 {
                verify_quote(&seg[8..]).map_err(|e| format!("quoted packet: {e}"))?;
            }
        }
        132 => {
            if seg.len() < 12 {
                return Err("short SCTP".into());
            }
            let mut z = seg.to_vec();
            z[8..12].fill(0);
            if seg[8..12] != crc32c(&z).to_le_bytes() {
                return Err("SCTP CRC32c".into());
            }
        }
        p => return Err(format!("unexpected protocol {p}")),
    }
    Ok(())
}

/// The packet an ICMP error quotes, translated with its flow: the IPv4
/// header checksum (when the header is whole) and, when the whole packet is
/// quoted, its L4 checksum must verify as well.
fn verify_quote(q: &[u8]) -> Result<(), String> {
    match q.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = (q[0] & 0x0f) as usize * 4;
            if ihl < 20 || q.len() < ihl {
                return Ok(()); // cut inside the header
            }
            if rfc1071(&[&q[..ihl]]) != 0 {
                return Err("IPv4 header checksum".into());
            }
            let total = u16::from_be_bytes([q[2], q[3]]) as usize;
            let frag = u16::from_be_bytes([q[6], q[7]]);
            if total > q.len() || total < ihl || frag & 0x3fff != 0 {
                return Ok(()); // partial quote: no L4 checksum to check
            }
            let seg = &q[ihl..total];
            let len = (seg.len() as u32).to_be_bytes();
            let pseudo = [&q[12..16], &q[16..20], &[0, q[9]], &len[2..]].concat();
            verify_l4(q[9], seg, &pseudo, true)
        }
        Some(6) if q.len() >= 40 => {
            let end = 40 + u16::from_be_bytes([q[4], q[5]]) as usize;
            if end > q.len() || !matches!(q[6], 6 | 17 | 132) {
                return Ok(());
            }
            let seg = &q[40..end];
            let len = (seg.len() as u32).to_be_bytes();
            let pseudo = [&q[8..24], &q[24..40], &len[..], &[0, 0, 0, q[6]]].concat();
            verify_l4(q[6], seg, &pseudo, false)
        }
        _ => Ok(()),
    }
}

#[test]
fn reference_checker_accepts_etherparse_frames_and_catches_flips() {
    let frames = [
        c_syn4(40000),
        udp_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(VIP4), 1, 53, 64, b"q"),
        udp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip6(client6()),
            ip6(vip6()),
            1,
            53,
            64,
            b"q",
        ),
        c_tcp(ip6(vip6()), 40001, 80, SYN, 1, 0),
        echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 1, 1, 64),
        echo_frame(CLIENT_MAC, P0_MAC, ip6(client6()), ip6(node6_0()), 1, 1, 64),
        super::sctp_flows::c_sctp(ip4(VIP4), 40002, 7, &[(0, b"data")]),
    ];
    for f in frames {
        verify_frame(&f).unwrap();
        // Any flipped byte past the MACs is caught (or changes the frame's
        // shape so that it is rejected).
        for i in 14..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            // Not covered by any checksum: IPv6 traffic class, flow label
            // and hop limit.
            if f[12] == 0x86 && (i == 14 + 7 || (15..=17).contains(&i)) {
                continue;
            }
            assert!(verify_frame(&g).is_err(), "flip at {i} missed in {f:02x?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Property inputs

/// One step of traffic for the checksum property.
#[derive(Clone, Debug)]
enum Op {
    /// A client packet to a Service (with or without endpoints).
    Client {
        v6: bool,
        l4: u8,
        empty: bool,
        host: u8,
        sport: u16,
        len: usize,
        flags: u8,
    },
    /// The backend answers a forwarded flow (`len` may exceed the client
    /// side's MTU: a too-big error goes back to the backend).
    Reply {
        k: prop::sample::Index,
        len: usize,
        df: bool,
    },
    /// The backend's kernel returns an ICMP error quoting a forwarded packet.
    BackendError {
        k: prop::sample::Index,
        kind: u8,
        quote: prop::sample::Index,
    },
    /// The client returns an ICMP error quoting a translated reply.
    ClientError { k: prop::sample::Index, kind: u8 },
    /// Echo request to a node address, or routed to another client.
    Echo { v6: bool, host: u8, to_node: bool },
    /// ARP request / neighbour solicitation for a node address or VIP.
    Neigh { v6: bool, host: u8, vip: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u8..3, prop::bool::weighted(0.2), 3u8..=254, 1u16..=65535, 0usize..1400, prop::sample::select(vec![SYN, ACK, SYN | ACK, FIN | ACK, RST, 0]))
            .prop_map(|(v6, l4, empty, host, sport, len, flags)| Op::Client { v6, l4, empty, host, sport, len, flags }),
        3 => (any::<prop::sample::Index>(), 0usize..1400, any::<bool>())
            .prop_map(|(k, len, df)| Op::Reply { k, len, df }),
        2 => (any::<prop::sample::Index>(), 0u8..4, any::<prop::sample::Index>())
            .prop_map(|(k, kind, quote)| Op::BackendError { k, kind, quote }),
        1 => (any::<prop::sample::Index>(), 0u8..3).prop_map(|(k, kind)| Op::ClientError { k, kind }),
        1 => (any::<bool>(), 3u8..=254, any::<bool>()).prop_map(|(v6, host, to_node)| Op::Echo { v6, host, to_node }),
        1 => (any::<bool>(), 3u8..=254, any::<bool>()).prop_map(|(v6, host, vip)| Op::Neigh { v6, host, vip }),
    ]
}

/// An ICMP(v6) error from `src` to `dst` quoting `quoted` (an IP packet).
fn icmp_error(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    (ty, code, rest): (u8, u8, [u8; 4]),
    quoted: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    let b = ip_step(smac, dmac, src, dst, 64);
    if src.is_ipv4() {
        b.icmpv4_raw(ty, code, rest).write(&mut v, quoted).unwrap();
    } else {
        b.icmpv6_raw(ty, code, rest).write(&mut v, quoted).unwrap();
    }
    v
}

/// ICMP error (type, code, rest) of `kind` for the family.
fn error_kind(v6: bool, kind: u8) -> (u8, u8, [u8; 4]) {
    match (v6, kind % 4) {
        (false, 0) => (3, 3, [0; 4]),             // port unreachable
        (false, 1) => (3, 4, [0, 0, 0x05, 0x00]), // frag needed, MTU 1280
        (false, 2) => (11, 0, [0; 4]),            // time exceeded
        (false, _) => (3, 1, [0; 4]),             // host unreachable
        (true, 0) => (1, 4, [0; 4]),              // port unreachable
        (true, 1) => (2, 0, [0, 0, 0x05, 0x00]),  // packet too big
        (true, 2) => (3, 0, [0; 4]),              // time exceeded
        (true, _) => (1, 3, [0; 4]),              // address unreachable
    }
}

/// A forwarded flow as the backend saw it.
struct Flow {
    l4: L4,
    v6: bool,
    /// The frame as the backend received it.
    fwd: Vec<u8>,
    bi: usize,
    /// The last reply as the client received it.
    reply: Option<Vec<u8>>,
}

fn l3_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

// ---------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nat_round_trips_restore_the_tuple(
        v6: bool,
        l4 in 0u8..3,
        host in 3u8..=254,
        sport in 1u16..=65535,
        masq: bool,
        n_workers in 1u16..=3,
        rx_fwd in 0usize..3,
        rx_rev in 0usize..3,
        tag: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        reply_payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let l4 = L4::from_index(l4);
        let (vport, tport) = l4.ports();
        let mut w = Workers::new(inv_table(masq), n_workers, ports(), 1024);
        let (client, cmac, vip) = (client_ip(v6, host), client_mac(host), vip(v6, false));

        let f = l4_frame(l4, cmac, P0_MAC, client, vip, sport, vport, SYN, tag, &payload);
        let (v, out) = w.deliver(rx_fwd, 0, &f, NOW);
        prop_assert_eq!(v, Verdict::Tx(1));
        let (bmac, src, bsport, backend, bdport, data) = tuple_of(l4, &out);
        let bi = backend_index(backend);
        prop_assert_eq!(bmac, backend_mac(bi));
        prop_assert_eq!(bdport, tport);
        if masq {
            prop_assert_eq!(src, node1(v6), "masqueraded to the egress node address");
            prop_assert!(SNAT_PORTS.contains(&bsport));
        } else {
            prop_assert_eq!((src, bsport), (client, sport), "DNAT keeps the client endpoint");
        }
        if l4 != L4::Sctp || !payload.is_empty() {
            prop_assert_eq!(&data, &payload);
        }

        // The backend answers whatever source it saw.
        let r = l4_frame(l4, backend_mac(bi), P1_MAC, backend, src, tport, bsport, SYN | ACK, !tag, &reply_payload);
        let (v, out) = w.deliver(rx_rev, 1, &r, NOW + 1);
        prop_assert_eq!(v, Verdict::Tx(0));
        let (cm, rsrc, rsport, rdst, rdport, data) = tuple_of(l4, &out);
        prop_assert_eq!((rsrc, rsport, rdst, rdport), (vip, vport, client, sport),
            "the client sees the tuple it sent to, reversed");
        prop_assert_eq!(cm, cmac);
        if l4 != L4::Sctp || !reply_payload.is_empty() {
            prop_assert_eq!(&data, &reply_payload);
        }
    }

    #[test]
    fn every_emitted_frame_has_valid_checksums(
        masq: bool,
        n_workers in 1u16..=2,
        ops in proptest::collection::vec((op(), 0usize..2), 1..24),
    ) {
        let mut ports = ports();
        ports[0].mtu = MTU_CLIENT_SIDE;
        let mut w = Workers::new(inv_table(masq), n_workers, ports, 1024);
        let mut flows: Vec<Flow> = vec![];
        for (step, (op, rx)) in ops.into_iter().enumerate() {
            let now = NOW + step as u64 * 1000;
            let (port, frame, from_client) = match &op {
                Op::Client { v6, l4, empty, host, sport, len, flags } => {
                    let l4 = L4::from_index(*l4);
                    let f = l4_frame(l4, client_mac(*host), P0_MAC, client_ip(*v6, *host), vip(*v6, *empty),
                        *sport, l4.ports().0, *flags, u32::from(*sport) * 7, &vec![0x5a; *len]);
                    (0, f, Some((l4, *v6)))
                }
                Op::Reply { k, len, df } => {
                    if flows.is_empty() { continue; }
                    let fl = &flows[k.index(flows.len())];
                    let o = tuple_of(fl.l4, &fl.fwd);
                    let mut f = l4_frame(fl.l4, backend_mac(fl.bi), P1_MAC, o.3, o.1, o.4, o.2, ACK, 99, &vec![0xa5; *len]);
                    if !fl.v6 && !df {
                        f[14 + 6] &= !0x40;
                        fix_ip4_csum(&mut f);
                    }
                    (1, f, None)
                }
                Op::BackendError { k, kind, quote } => {
                    if flows.is_empty() { continue; }
                    let fl = &flows[k.index(flows.len())];
                    let o = tuple_of(fl.l4, &fl.fwd);
                    let q = l3_of(&fl.fwd);
                    let min = if fl.v6 { 48 } else { 28 };
                    let n = min + quote.index(q.len() - min + 1);
                    let f = icmp_error(backend_mac(fl.bi), P1_MAC, o.3, o.1, error_kind(fl.v6, *kind), &q[..n]);
                    (1, f, None)
                }
                Op::ClientError { k, kind } => {
                    let with_reply: Vec<_> = flows.iter().filter(|f| f.reply.is_some()).collect();
                    if with_reply.is_empty() { continue; }
                    let fl = with_reply[k.index(with_reply.len())];
                    let r = fl.reply.as_ref().unwrap();
                    let o = tuple_of(fl.l4, r);
                    let f = icmp_error(o.0, P0_MAC, o.3, o.1, error_kind(fl.v6, *kind), l3_of(r));
                    (0, f, None)
                }
                Op::Echo { v6, host, to_node } => {
                    let dst = if *to_node {
                        if *v6 { ip6(node6_0()) } else { ip4(NODE0) }
                    } else {
                        client_ip(*v6, host.wrapping_add(1).max(3))
                    };
                    (0, echo_frame(client_mac(*host), P0_MAC, client_ip(*v6, *host), dst, 7, 1, 64), None)
                }
                Op::Neigh { v6, host, vip: to_vip } => {
                    let f = if *v6 {
                        let target = if *to_vip { vip6() } else { node6_0() };
                        let IpAddr::V6(src) = client_ip(true, *host) else { unreachable!() };
                        let t = target.octets();
                        ndp_frame(client_mac(*host), [0x33, 0x33, 0xff, t[13], t[14], t[15]], src, snm(target),
                            135, 0, target, Some((1, client_mac(*host))), 255)
                    } else {
                        arp_frame(1, [0xff; 6], client_mac(*host), [198, 18, 0, *host], [0; 6], if *to_vip { VIP4 } else { NODE0 })
                    };
                    (0, f, None)
                }
            };
            let (v, out) = w.deliver(rx, port, &frame, now);
            if let Verdict::Tx(p) = v {
                if let Err(e) = verify_frame(&out) {
                    prop_assert!(false, "{:?} → Tx({}): {}\nin:  {:02x?}\nout: {:02x?}", op, p, e, frame, out);
                }
                if let (Some((l4, v6)), 1) = (from_client, p) {
                    let bi = backend_index(tuple_of(l4, &out).3);
                    flows.push(Flow { l4, v6, fwd: out.clone(), bi, reply: None });
                }
                if let (Op::Reply { k, .. }, 0) = (&op, p) {
                    let i = k.index(flows.len());
                    flows[i].reply = Some(out.clone());
                }
            }
            for s in w.solicitations() {
                if let Err(e) = verify_frame(&s) {
                    prop_assert!(false, "solicitation: {}: {:02x?}", e, s);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Corrupted frames

/// Valid frames of every kind the parser distinguishes, to mutate.
fn seed_frames() -> Vec<Vec<u8>> {
    let mut v = base_frames();
    let c6 = ip6(client6());
    // IPv6 with Hop-by-Hop, Destination Options and Routing headers before UDP.
    let mut ext = udp_frame(CLIENT_MAC, P0_MAC, c6, ip6(vip6()), 41000, 53, 64, b"ext");
    let chain: Vec<u8> = [
        &[60u8, 0, 1, 4, 0, 0, 0, 0][..], // hop-by-hop → dest opts (PadN)
        &[43, 0, 1, 4, 0, 0, 0, 0][..],   // dest opts → routing
        &[17, 0, 0, 0, 0, 0, 0, 0][..],   // routing type 0, segments left 0 → UDP
    ]
    .concat();
    ext[14 + 6] = 0;
    ext.splice(54..54, chain.iter().copied());
    let pl = u16::from_be_bytes([ext[18], ext[19]]) + chain.len() as u16;
    ext[18..20].copy_from_slice(&pl.to_be_bytes());
    v.push(ext);
    // IPv6 fragments: first (offset 0, M) and a later one.
    for (off_m, id) in [(0x0001u16, 1u32), (0x00b8, 1)] {
        let mut fr = udp_frame(CLIENT_MAC, P0_MAC, c6, ip6(vip6()), 41001, 53, 64, &[1; 32]);
        fr[14 + 6] = 44;
        let mut h = vec![17u8, 0];
        h.extend_from_slice(&off_m.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        fr.splice(54..54, h);
        let pl = u16::from_be_bytes([fr[18], fr[19]]) + 8;
        fr[18..20].copy_from_slice(&pl.to_be_bytes());
        v.push(fr);
    }
    // IPv4 fragments: first (MF) and a later one (offset 64).
    for flags in [0x2000u16, 0x0008] {
        let mut fr = udp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(VIP4),
            41002,
            53,
            64,
            &[2; 32],
        );
        fr[20..22].copy_from_slice(&flags.to_be_bytes());
        fix_ip4_csum(&mut fr);
        v.push(fr);
    }
    // IPv4 with options (IHL 6: a NOP-padded header).
    let mut opt = c_syn4(41003);
    opt.splice(34..34, [1u8, 1, 1, 0]);
    opt[14] = 0x46;
    let tl = u16::from_be_bytes([opt[16], opt[17]]) + 4;
    opt[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ip4_csum(&mut opt);
    v.push(opt);
    // A backend reply and ICMP errors quoting flows, both families.
    v.push(b_tcp(0, ip4(BACKENDS4[0]), 8080, 45000, SYN | ACK, 1, 1001));
    let q4 = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(BACKENDS4[1]),
        45001,
        5353,
        64,
        b"q",
    );
    v.push(icmp_error(
        backend_mac(1),
        P1_MAC,
        ip4(BACKENDS4[1]),
        ip4(CLIENT4),
        error_kind(false, 0),
        &q4[14..],
    ));
    let q6 = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        c6,
        ip6(backends6()[1]),
        45001,
        5353,
        64,
        b"q",
    );
    v.push(icmp_error(
        backend_mac(1),
        P1_MAC,
        ip6(backends6()[1]),
        c6,
        error_kind(true, 1),
        &q6[14..],
    ));
    // VLAN-tagged TCP, neighbour solicitation and advertisement.
    let mut tagged = c_syn4(41004);
    tagged.splice(12..12, [0x81u8, 0, 0, 5]);
    v.push(tagged);
    v.push(ndp_frame(
        CLIENT_MAC,
        [0x33, 0x33, 0xff, 0, 0, 1],
        client6(),
        snm(node6_0()),
        135,
        0,
        node6_0(),
        Some((1, CLIENT_MAC)),
        255,
    ));
    v.push(ndp_frame(
        CLIENT_MAC,
        P0_MAC,
        client6(),
        node6_0(),
        136,
        0x60,
        client6(),
        Some((2, CLIENT_MAC)),
        255,
    ));
    v
}

/// A corruption applied to a frame.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte.
    Flip(prop::sample::Index, u8),
    /// Cut the frame.
    Truncate(prop::sample::Index),
    /// Append bytes (Ethernet padding, trailing junk).
    Extend(Vec<u8>),
    /// Overwrite the IPv4 total length / IPv6 payload length.
    IpLen(u16),
    /// Overwrite the IPv4 IHL nibble.
    Ihl(u8),
    /// Overwrite the UDP length / TCP data offset / SCTP chunk length field
    /// (the 16 bits at L4 offset 4 or 12, whichever the protocol uses).
    L4Len(u16),
    /// Overwrite the IPv6 next header / IPv4 protocol.
    Proto(u8),
    /// Recompute the IPv4 header checksum (so the corruptions before it
    /// get past the header check).
    FixIpv4Checksum,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
        2 => any::<u16>().prop_map(Mutation::IpLen),
        1 => (0u8..16).prop_map(Mutation::Ihl),
        2 => any::<u16>().prop_map(Mutation::L4Len),
        1 => prop::sample::select(vec![0u8, 1, 6, 17, 43, 44, 50, 51, 58, 59, 60, 132, 255]).prop_map(Mutation::Proto),
        3 => Just(Mutation::FixIpv4Checksum),
    ]
}

fn mutate(f: &mut Vec<u8>, m: &Mutation) {
    let l3 = if f.len() >= 14 && f[12..14] == [0x81, 0] {
        18
    } else {
        14
    };
    let v6 = f.len() > l3 && f[l3] >> 4 == 6;
    let ihl = if f.len() > l3 {
        (f[l3] & 0x0f) as usize * 4
    } else {
        20
    };
    let l4 = l3 + if v6 { 40 } else { ihl.max(20) };
    let put = |f: &mut Vec<u8>, at: usize, v: u16| {
        if at + 2 <= f.len() {
            f[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    };
    match m {
        Mutation::Flip(i, x) if !f.is_empty() => {
            let i = i.index(f.len());
            f[i] ^= x;
        }
        Mutation::Flip(..) => {}
        Mutation::Truncate(i) => {
            let n = i.index(f.len() + 1);
            f.truncate(n);
        }
        Mutation::Extend(b) => f.extend_from_slice(b),
        Mutation::IpLen(n) => put(f, l3 + if v6 { 4 } else { 2 }, *n),
        Mutation::Ihl(n) => {
            if f.len() > l3 && !v6 {
                f[l3] = (f[l3] & 0xf0) | n;
            }
        }
        Mutation::L4Len(n) => {
            let proto = if v6 { f.get(l3 + 6) } else { f.get(l3 + 9) };
            match proto {
                Some(6) => put(f, l4 + 12, *n),
                Some(132) => put(f, l4 + 14, *n),
                _ => put(f, l4 + 4, *n),
            }
        }
        Mutation::Proto(p) => {
            let at = l3 + if v6 { 6 } else { 9 };
            if at < f.len() {
                f[at] = *p;
            }
        }
        Mutation::FixIpv4Checksum => {
            if !v6 && ihl >= 20 && f.len() >= l3 + ihl {
                f[l3 + 10..l3 + 12].fill(0);
                let c = rfc1071(&[&f[l3..l3 + ihl]]);
                f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_frame_sequences_never_panic(
        masq: bool,
        n_workers in 1u16..=3,
        seq in proptest::collection::vec(
            (any::<prop::sample::Index>(), proptest::collection::vec(mutation(), 0..4), 0usize..3, 0u16..3, 0u64..5_000_000_000),
            1..32,
        ),
    ) {
        let seeds = seed_frames();
        let mut w = Workers::new(inv_table(masq), n_workers, ports(), 64);
        let mut now = NOW;
        let (mut tx, mut drops, mut other) = (0u64, 0u64, 0u64);
        for (which, muts, rx, port, dt) in &seq {
            let mut f = seeds[which.index(seeds.len())].clone();
            for m in muts {
                mutate(&mut f, m);
            }
            now += dt;
            // Port 2 does not exist: dropped as BadPort.
            let (v, out) = w.deliver(*rx, *port, &f, now);
            match v {
                Verdict::Tx(p) => {
                    prop_assert!(p < 2, "Tx to unknown port {}", p);
                    prop_assert!(out.len() >= 14, "Tx of a {}-byte frame", out.len());
                    tx += 1;
                }
                Verdict::Drop(_) => drops += 1,
                Verdict::Consumed | Verdict::Hold { .. } => other += 1,
                Verdict::HandOff(_) => unreachable!("deliver follows hand-offs"),
                Verdict::ToKernel(_) | Verdict::FromKernel(_) => {
                    prop_assert!(false, "{:?} without an exception port", v);
                }
            }
            for p in &mut w.pipes {
                p.sessions.expire(now, 64);
            }
            w.solicitations();
        }
        prop_assert_eq!(tx + drops + other, seq.len() as u64, "one final verdict per frame");
        let counted: u64 = w.stats.iter().map(|s| s.total_drops()).sum();
        prop_assert_eq!(counted, drops, "every drop counted");
    }
}

#[test]
fn seed_frames_are_valid_before_mutation() {
    for f in seed_frames() {
        verify_frame(&f).unwrap_or_else(|e| panic!("{e}: {f:02x?}"));
    }
}
