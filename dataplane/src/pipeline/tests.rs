//! Flow tests of the per-packet pipeline, in the style of kube-proxy's proxier
//! tests: synthetic frames built with `etherparse` (an independent
//! implementation) are pushed through the real [`Pipeline::process`], and the
//! frames that come out are parsed and checksum-verified with `etherparse`.
//!
//! Topology (mirror of the e2e demo):
//! - port 0, client side: MAC 02:00:00:00:00:00, 198.18.0.1/24, 2001:2::1/64;
//!   client 198.18.0.2 / 2001:2::2 at 02:00:00:00:00:aa (static neighbour).
//! - port 1, backend side: MAC 02:00:00:00:00:01, 198.18.1.1/24, 2001:2:0:1::1/64;
//!   backends 198.18.1.11..13 / 2001:2:0:1::11..13 at 02:00:00:00:01:11..13.
use super::*;
use crate::addr::{owner_of, Addr, Proto, SockAddr};
use crate::packet::MacAddr;
use crate::session::{TcpState, Timeouts};
use crate::stats::{DropReason, WorkerStats};
use crate::table::{
    Frontend, Interface, NoBackends, ServiceSpec, ServiceTable, StaticNeighbor, TableSpec,
};
use core::sync::atomic::Ordering::Relaxed;
use etherparse::{
    IpHeaders, Ipv4HeaderSlice, LinkSlice, NetSlice, PacketBuilder, PacketBuilderStep,
    SlicedPacket, TransportSlice, VlanSlice,
};
use proptest::prelude::*;
use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[test]
fn vecbuf_behaves_like_an_mbuf() {
    let mut b = VecBuf::new(&[1, 2, 3, 4]);
    assert!(b.prepend(2));
    assert_eq!(b.data(), &[0, 0, 1, 2, 3, 4]);
    assert!(b.adj(3));
    assert_eq!(b.data(), &[2, 3, 4]);
    b.truncate(10);
    assert_eq!(b.data().len(), 3);
    b.truncate(1);
    assert_eq!(b.data(), &[2]);
    assert!(!b.adj(2));
    assert!(!b.prepend(VECBUF_HEADROOM + 2));
}

// ---------------------------------------------------------------------------
// Topology

const NOW: u64 = 1_000_000;
const P0_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0];
const P1_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
const OTHER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xbb];
const NODE0: [u8; 4] = [198, 18, 0, 1];
const NODE1: [u8; 4] = [198, 18, 1, 1];
const CLIENT4: [u8; 4] = [198, 18, 0, 2];
const VIP4: [u8; 4] = [198, 18, 100, 1];
const EMPTY4: [u8; 4] = [198, 18, 100, 2];
const BACKENDS4: [[u8; 4]; 3] = [[198, 18, 1, 11], [198, 18, 1, 12], [198, 18, 1, 13]];

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn node6_0() -> Ipv6Addr {
    v6("2001:2::1")
}
fn client6() -> Ipv6Addr {
    v6("2001:2::2")
}
fn vip6() -> Ipv6Addr {
    v6("2001:2::100")
}
fn empty6() -> Ipv6Addr {
    v6("2001:2::101")
}
fn backends6() -> [Ipv6Addr; 3] {
    [
        v6("2001:2:0:1::11"),
        v6("2001:2:0:1::12"),
        v6("2001:2:0:1::13"),
    ]
}
fn backend_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 1, 0x11 + i as u8]
}
fn ip4(o: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(o))
}
fn ip6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}
fn sa(ip: IpAddr, port: u16) -> SockAddr {
    SockAddr::new(Addr::from(ip), port)
}
fn svc(name: &str, vip: IpAddr, port: u16, proto: Proto, backends: Vec<SockAddr>) -> ServiceSpec {
    ServiceSpec {
        source_ranges: vec![],
        affinity_timeout: None,
        masquerade: false,
        external: false,
        no_backends: NoBackends::Reject,
        short_circuit: vec![],
        algorithm: Default::default(),
        name: name.into(),
        frontend: Frontend {
            addr: sa(vip, port),
            proto,
        },
        backends,
    }
}

fn spec() -> TableSpec {
    let b4 = |port| {
        BACKENDS4
            .iter()
            .map(|b| sa(ip4(*b), port))
            .collect::<Vec<_>>()
    };
    let b6 = |port| {
        backends6()
            .iter()
            .map(|b| sa(ip6(*b), port))
            .collect::<Vec<_>>()
    };
    let mut neighbors = vec![
        StaticNeighbor {
            addr: Addr::v4(CLIENT4),
            mac: MacAddr(CLIENT_MAC),
            port: 0,
        },
        StaticNeighbor {
            addr: Addr::from(client6()),
            mac: MacAddr(CLIENT_MAC),
            port: 0,
        },
    ];
    #[allow(clippy::needless_range_loop)]
    for i in 0..3 {
        neighbors.push(StaticNeighbor {
            addr: Addr::v4(BACKENDS4[i]),
            mac: MacAddr(backend_mac(i)),
            port: 1,
        });
        neighbors.push(StaticNeighbor {
            addr: Addr::from(backends6()[i]),
            mac: MacAddr(backend_mac(i)),
            port: 1,
        });
    }
    TableSpec {
        services: vec![
            svc("default/web:http", ip4(VIP4), 80, Proto::Tcp, b4(8080)),
            svc("default/dns:dns", ip4(VIP4), 53, Proto::Udp, b4(5353)),
            svc("default/empty:http", ip4(EMPTY4), 80, Proto::Tcp, vec![]),
            svc("default/empty:dns", ip4(EMPTY4), 53, Proto::Udp, vec![]),
            svc("default/web6:http", ip6(vip6()), 80, Proto::Tcp, b6(8080)),
            svc("default/dns6:dns", ip6(vip6()), 53, Proto::Udp, b6(5353)),
            svc("default/empty6:http", ip6(empty6()), 80, Proto::Tcp, vec![]),
            svc("default/empty6:dns", ip6(empty6()), 53, Proto::Udp, vec![]),
            // SCTP on the same VIPs and port number as the TCP Services.
            svc("default/sig:sctp", ip4(VIP4), 80, Proto::Sctp, b4(9999)),
            svc("default/empty:sctp", ip4(EMPTY4), 80, Proto::Sctp, vec![]),
            svc("default/sig6:sctp", ip6(vip6()), 80, Proto::Sctp, b6(9999)),
            svc(
                "default/empty6:sctp",
                ip6(empty6()),
                80,
                Proto::Sctp,
                vec![],
            ),
        ],
        interfaces: vec![
            Interface {
                port: 0,
                addr: Addr::v4(NODE0),
                prefix_len: 24,
            },
            Interface {
                port: 0,
                addr: Addr::from(node6_0()),
                prefix_len: 64,
            },
            Interface {
                port: 1,
                addr: Addr::v4(NODE1),
                prefix_len: 24,
            },
            Interface {
                port: 1,
                addr: Addr::from(v6("2001:2:0:1::1")),
                prefix_len: 64,
            },
        ],
        routes: vec![],
        neighbors,
        retired: vec![],
        masquerade: Default::default(),
    }
}

fn table() -> ServiceTable {
    ServiceTable::new(spec(), 1)
}

fn ports() -> Vec<PortInfo> {
    vec![
        PortInfo {
            mac: MacAddr(P0_MAC),
            vlan: None,
            mtu: 1500,
        },
        PortInfo {
            mac: MacAddr(P1_MAC),
            vlan: None,
            mtu: 1500,
        },
    ]
}

fn pipeline_with(id: u16, n: u16, cfg: PipelineConfig, t: &ServiceTable) -> Pipeline {
    let mut p = Pipeline::new(id, n, ports(), cfg);
    p.on_table(t);
    p
}

fn setup() -> (Pipeline, ServiceTable, WorkerStats) {
    let t = table();
    let p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    (p, t, WorkerStats::default())
}

fn run(
    p: &mut Pipeline,
    t: &ServiceTable,
    st: &WorkerStats,
    port: u16,
    frame: &[u8],
    now: u64,
    handed_off: bool,
) -> (Verdict, Vec<u8>) {
    let mut b = VecBuf::new(frame);
    let v = p.process(t, st, port, &mut b, now, handed_off);
    (v, b.bytes())
}

// ---------------------------------------------------------------------------
// Frame builders (etherparse)

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn ip_step(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
) -> PacketBuilderStep<IpHeaders> {
    let e = PacketBuilder::ethernet2(smac, dmac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => e.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => e.ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("mixed families"),
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = ip_step(smac, dmac, src, dst, ttl).tcp(sport, dport, seq, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

#[allow(clippy::too_many_arguments)]
fn udp_frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    ip_step(smac, dmac, src, dst, ttl)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn echo_frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    ttl: u8,
) -> Vec<u8> {
    let mut v = Vec::new();
    let payload = b"ping-payload-0123456789";
    match src {
        IpAddr::V4(_) => ip_step(smac, dmac, src, dst, ttl)
            .icmpv4_echo_request(id, seq)
            .write(&mut v, payload)
            .unwrap(),
        IpAddr::V6(_) => ip_step(smac, dmac, src, dst, ttl)
            .icmpv6_echo_request(id, seq)
            .write(&mut v, payload)
            .unwrap(),
    }
    v
}

/// Client (port 0) TCP segment towards `dst:dport`.
fn c_tcp(dst: IpAddr, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let src = if dst.is_ipv4() {
        ip4(CLIENT4)
    } else {
        ip6(client6())
    };
    tcp_frame(
        CLIENT_MAC,
        P0_MAC,
        src,
        dst,
        sport,
        dport,
        flags,
        seq,
        ack,
        64,
        &[],
    )
}
fn c_syn4(sport: u16) -> Vec<u8> {
    c_tcp(ip4(VIP4), sport, 80, SYN, 1000, 0)
}
/// Backend (port 1) TCP segment from `src:sport` to the client.
fn b_tcp(bi: usize, src: IpAddr, sport: u16, cport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let dst = if src.is_ipv4() {
        ip4(CLIENT4)
    } else {
        ip6(client6())
    };
    tcp_frame(
        backend_mac(bi),
        P1_MAC,
        src,
        dst,
        sport,
        cport,
        flags,
        seq,
        ack,
        64,
        &[],
    )
}

fn arp_frame(
    op: u16,
    dmac: [u8; 6],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

fn snm(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// ICMPv6 NDP message (NS = 135, NA = 136) built by etherparse (checksum included).
#[allow(clippy::too_many_arguments)]
fn ndp_frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    flags: u8,
    target: Ipv6Addr,
    opt: Option<(u8, [u8; 6])>,
    hop: u8,
) -> Vec<u8> {
    let mut payload = target.octets().to_vec();
    if let Some((t, mac)) = opt {
        payload.extend_from_slice(&[t, 1]);
        payload.extend_from_slice(&mac);
    }
    let mut v = Vec::new();
    ip_step(smac, dmac, ip6(src), ip6(dst), hop)
        .icmpv6_raw(ty, 0, [flags, 0, 0, 0])
        .write(&mut v, &payload)
        .unwrap();
    v
}

/// Recomputes the IPv4 header checksum of an untagged frame (with etherparse).
fn fix_ip4_csum(f: &mut [u8]) {
    let c = Ipv4HeaderSlice::from_slice(&f[14..])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Output parsing and verification (etherparse)

#[derive(Debug, Clone, Default)]
struct Out {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vlan: Option<u16>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    ttl: u8,
    ip_total_len: usize,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    udp_csum: Option<u16>,
    icmp: Option<(u8, u8)>,
    /// The whole ICMP message (type byte onwards).
    icmp_msg: Vec<u8>,
    payload: Vec<u8>,
}

/// Parses an IP frame with etherparse and asserts that the IPv4 header checksum
/// and the TCP/UDP/ICMP(v6) checksum are valid.
fn parse(frame: &[u8]) -> Out {
    let p = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("etherparse rejects output: {e:?}\n{frame:02x?}"));
    let mut o = Out::default();
    if let Some(LinkSlice::Ethernet2(e)) = &p.link {
        o.dst_mac = e.destination();
        o.src_mac = e.source();
    }
    if let Some(VlanSlice::SingleVlan(v)) = &p.vlan {
        o.vlan = Some(v.vlan_identifier().value());
    }
    let (s4, d4, s6, d6);
    match p.net.as_ref().expect("no IP layer") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "IPv4 header checksum"
            );
            o.src = Some(ip4(h.source()));
            o.dst = Some(ip4(h.destination()));
            o.ttl = h.ttl();
            o.ip_total_len = h.total_len() as usize;
            (s4, d4, s6, d6) = (h.source(), h.destination(), [0; 16], [0; 16]);
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            o.src = Some(ip6(h.source_addr()));
            o.dst = Some(ip6(h.destination_addr()));
            o.ttl = h.hop_limit();
            o.ip_total_len = 40 + h.payload_length() as usize;
            (s4, d4, s6, d6) = ([0; 4], [0; 4], h.source(), h.destination());
        }
    }
    let v4 = o.src.unwrap().is_ipv4();
    match p.transport.as_ref().expect("no transport layer") {
        TransportSlice::Tcp(t) => {
            let c = if v4 {
                t.calc_checksum_ipv4(s4, d4)
            } else {
                t.calc_checksum_ipv6(s6, d6)
            }
            .unwrap();
            assert_eq!(t.checksum(), c, "TCP checksum");
            o.sport = t.source_port();
            o.dport = t.destination_port();
            o.seq = t.sequence_number();
            o.ack = t.acknowledgment_number();
            o.flags = u8::from(t.fin())
                | u8::from(t.syn()) << 1
                | u8::from(t.rst()) << 2
                | u8::from(t.ack()) << 4;
            o.payload = t.payload().to_vec();
        }
        TransportSlice::Udp(u) => {
            o.sport = u.source_port();
            o.dport = u.destination_port();
            o.udp_csum = Some(u.checksum());
            o.payload = u.payload().to_vec();
            if !(v4 && u.checksum() == 0) {
                let h = u.to_header();
                let c = if v4 {
                    h.calc_checksum_ipv4_raw(s4, d4, u.payload())
                } else {
                    h.calc_checksum_ipv6_raw(s6, d6, u.payload())
                }
                .unwrap();
                assert_eq!(u.checksum(), c, "UDP checksum");
            }
        }
        TransportSlice::Icmpv4(i) => {
            assert_eq!(
                i.checksum(),
                i.icmp_type().calc_checksum(i.payload()),
                "ICMP checksum"
            );
            o.icmp = Some((i.type_u8(), i.code_u8()));
            o.icmp_msg = i.slice().to_vec();
            o.payload = i.payload().to_vec();
        }
        TransportSlice::Icmpv6(i) => {
            assert!(i.is_checksum_valid(s6, d6), "ICMPv6 checksum");
            o.icmp = Some((i.type_u8(), i.code_u8()));
            o.icmp_msg = i.slice().to_vec();
            o.payload = i.payload().to_vec();
        }
    }
    o
}

fn backend_index(ip: IpAddr) -> usize {
    let i4 = BACKENDS4.iter().position(|b| ip == ip4(*b));
    let i6 = backends6().iter().position(|b| ip == ip6(*b));
    i4.or(i6).unwrap_or_else(|| panic!("{ip} is not a backend"))
}

fn stat(c: &core::sync::atomic::AtomicU64) -> u64 {
    c.load(Relaxed)
}

// ---------------------------------------------------------------------------
// 1-3: DNAT and reverse NAT

#[test]
fn tcp_syn_to_vip_is_dnated() {
    let (mut p, t, st) = setup();
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(40000), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let bi = backend_index(o.dst.unwrap());
    assert_eq!(o.dport, 8080);
    assert_eq!(o.src, Some(ip4(CLIENT4)));
    assert_eq!(o.sport, 40000);
    assert_eq!(o.dst_mac, backend_mac(bi));
    assert_eq!(o.src_mac, P1_MAC);
    assert_eq!(o.ttl, 63);
    assert_eq!(o.flags, SYN);
    assert_eq!(o.seq, 1000);
    assert_eq!(out.len(), c_syn4(40000).len());
    assert_eq!(stat(&st.sessions_created), 1);
    assert_eq!(stat(&st.nat_forward), 1);
    assert_eq!(p.sessions.len(), 1);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn reply_is_reverse_natted() {
    let (mut p, t, st) = setup();
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(40001), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let fwd = parse(&out);
    let backend = fwd.dst.unwrap();
    let bi = backend_index(backend);

    let synack = b_tcp(bi, backend, 8080, 40001, SYN | ACK, 5000, 1001);
    let (v, out) = run(&mut p, &t, &st, 1, &synack, NOW + 1, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!((o.src, o.sport), (Some(ip4(VIP4)), 80));
    assert_eq!((o.dst, o.dport), (Some(ip4(CLIENT4)), 40001));
    assert_eq!(o.dst_mac, CLIENT_MAC);
    assert_eq!(o.src_mac, P0_MAC);
    assert_eq!(o.ttl, 63);
    assert_eq!((o.flags, o.seq, o.ack), (SYN | ACK, 5000, 1001));
    assert_eq!(stat(&st.nat_reverse), 1);

    // The client's ACK and data hit the session: same backend every time.
    for i in 0..10u32 {
        let f = tcp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(VIP4),
            40001,
            80,
            ACK,
            1001 + i,
            5001,
            64,
            b"GET / HTTP/1.1\r\n\r\n",
        );
        let (v, out) = run(&mut p, &t, &st, 0, &f, NOW + 2 + u64::from(i), false);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        assert_eq!((o.dst, o.dport), (Some(backend), 8080));
        assert_eq!(o.payload, b"GET / HTTP/1.1\r\n\r\n");
    }
    assert_eq!(stat(&st.sessions_created), 1);
    assert_eq!(p.sessions.len(), 1);
    let s = p.sessions.iter().next().unwrap();
    assert_eq!(s.tcp, TcpState::Established);
    assert!(s.replied);
}

#[test]
fn udp_round_trip_is_natted() {
    let (mut p, t, st) = setup();
    let q = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        33333,
        53,
        64,
        b"\x12\x34query-odd",
    );
    let (v, out) = run(&mut p, &t, &st, 0, &q, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let backend = o.dst.unwrap();
    let bi = backend_index(backend);
    assert_eq!((o.sport, o.dport), (33333, 5353));
    assert_eq!(o.src, Some(ip4(CLIENT4)));
    assert_eq!(o.dst_mac, backend_mac(bi));
    assert_eq!(o.payload, b"\x12\x34query-odd");

    let r = udp_frame(
        backend_mac(bi),
        P1_MAC,
        backend,
        ip4(CLIENT4),
        5353,
        33333,
        64,
        b"answer",
    );
    let (v, out) = run(&mut p, &t, &st, 1, &r, NOW + 1, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!((o.src, o.sport), (Some(ip4(VIP4)), 53));
    assert_eq!((o.dst, o.dport), (Some(ip4(CLIENT4)), 33333));
    assert_eq!(o.dst_mac, CLIENT_MAC);

    // Second query hits the session.
    let (v, out) = run(&mut p, &t, &st, 0, &q, NOW + 2, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(parse(&out).dst, Some(backend));
    assert_eq!(stat(&st.sessions_created), 1);
}

#[test]
fn udp_zero_checksum_stays_zero_on_ipv4() {
    let (mut p, t, st) = setup();
    let mut q = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        33334,
        53,
        64,
        b"no-checksum",
    );
    q[14 + 20 + 6..14 + 20 + 8].fill(0);
    let (v, out) = run(&mut p, &t, &st, 0, &q, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(o.udp_csum, Some(0));
    let backend = o.dst.unwrap();
    let mut r = udp_frame(
        backend_mac(backend_index(backend)),
        P1_MAC,
        backend,
        ip4(CLIENT4),
        5353,
        33334,
        64,
        b"x",
    );
    r[14 + 20 + 6..14 + 20 + 8].fill(0);
    let (v, out) = run(&mut p, &t, &st, 1, &r, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.udp_csum, Some(0));
    assert_eq!((o.src, o.sport), (Some(ip4(VIP4)), 53));
}

#[test]
fn ipv6_tcp_round_trip_is_natted() {
    let (mut p, t, st) = setup();
    let syn = c_tcp(ip6(vip6()), 41000, 80, SYN, 7, 0);
    let (v, out) = run(&mut p, &t, &st, 0, &syn, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let backend = o.dst.unwrap();
    let bi = backend_index(backend);
    assert!(backend.is_ipv6());
    assert_eq!(
        (o.src, o.sport, o.dport),
        (Some(ip6(client6())), 41000, 8080)
    );
    assert_eq!(o.ttl, 63);
    assert_eq!((o.dst_mac, o.src_mac), (backend_mac(bi), P1_MAC));

    let (v, out) = run(
        &mut p,
        &t,
        &st,
        1,
        &b_tcp(bi, backend, 8080, 41000, SYN | ACK, 99, 8),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!((o.src, o.sport), (Some(ip6(vip6())), 80));
    assert_eq!((o.dst, o.dport), (Some(ip6(client6())), 41000));
    assert_eq!((o.dst_mac, o.src_mac), (CLIENT_MAC, P0_MAC));

    let (v, out) = run(
        &mut p,
        &t,
        &st,
        0,
        &c_tcp(ip6(vip6()), 41000, 80, ACK, 8, 100),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(parse(&out).dst, Some(backend));
}

#[test]
fn ipv6_udp_round_trip_is_natted() {
    let (mut p, t, st) = setup();
    let q = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(vip6()),
        5000,
        53,
        64,
        b"q6",
    );
    let (v, out) = run(&mut p, &t, &st, 0, &q, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let backend = o.dst.unwrap();
    assert_eq!(o.dport, 5353);
    let r = udp_frame(
        backend_mac(backend_index(backend)),
        P1_MAC,
        backend,
        ip6(client6()),
        5353,
        5000,
        64,
        b"a6!",
    );
    let (v, out) = run(&mut p, &t, &st, 1, &r, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!((o.src, o.sport, o.dport), (Some(ip6(vip6())), 53, 5000));
}

#[test]
fn vlan_egress_port_gets_a_tag() {
    let t = table();
    let mut ports = ports();
    ports[1].vlan = Some(100);
    let mut p = Pipeline::new(0, 1, ports, PipelineConfig::default());
    p.on_table(&t);
    let st = WorkerStats::default();
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(40002), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(o.vlan, Some(100));
    assert_eq!(out.len(), c_syn4(40002).len() + 4);
    let backend = o.dst.unwrap();
    // The tagged reply comes back untagged on port 0.
    let mut r = Vec::new();
    PacketBuilder::ethernet2(backend_mac(backend_index(backend)), P1_MAC)
        .single_vlan(etherparse::VlanId::try_new(100).unwrap())
        .ipv4(backend_v4(backend), CLIENT4, 64)
        .tcp(8080, 40002, 1, 1000)
        .syn()
        .ack(1001)
        .write(&mut r, &[])
        .unwrap();
    let (v, out) = run(&mut p, &t, &st, 1, &r, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.vlan, None);
    assert_eq!((o.src, o.sport), (Some(ip4(VIP4)), 80));
    // An untagged frame on the tagged port is not ours.
    let (v, _) = run(
        &mut p,
        &t,
        &st,
        1,
        &b_tcp(0, ip4(BACKENDS4[0]), 8080, 1, ACK, 1, 1),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Drop(DropReason::VlanMismatch));
}

fn backend_v4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        _ => panic!(),
    }
}

// ---------------------------------------------------------------------------
// 4: spread and determinism

#[test]
fn new_flows_spread_over_backends() {
    let (mut p, t, st) = setup();
    let mut counts = [0u32; 3];
    for sport in 10000..13000u16 {
        let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        counts[backend_index(parse(&out).dst.unwrap())] += 1;
    }
    for c in counts {
        assert!((750..=1260).contains(&c), "uneven spread: {counts:?}");
    }
    assert_eq!(stat(&st.sessions_created), 3000);
}

#[test]
fn maglev_choice_is_deterministic_across_pipelines_and_rebuilds() {
    let t1 = table();
    let t2 = ServiceTable::new(spec(), 7);
    let st = WorkerStats::default();
    let mut a = pipeline_with(0, 1, PipelineConfig::default(), &t1);
    let mut b = pipeline_with(0, 1, PipelineConfig::default(), &t1);
    let mut c = pipeline_with(0, 1, PipelineConfig::default(), &t2);
    for sport in 20000..20500u16 {
        let f = c_syn4(sport);
        let da = parse(&run(&mut a, &t1, &st, 0, &f, NOW, false).1).dst;
        let db = parse(&run(&mut b, &t1, &st, 0, &f, NOW + 5, false).1).dst;
        let dc = parse(&run(&mut c, &t2, &st, 0, &f, NOW, false).1).dst;
        assert_eq!(da, db, "port {sport}");
        assert_eq!(da, dc, "port {sport}");
    }
}

// ---------------------------------------------------------------------------
// 5: services without endpoints reject

#[test]
fn tcp_syn_to_empty_service_gets_rst() {
    let (mut p, t, st) = setup();
    let f = c_tcp(ip4(EMPTY4), 40100, 80, SYN, 0xffff_fff0, 0);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!((o.src, o.sport), (Some(ip4(EMPTY4)), 80));
    assert_eq!((o.dst, o.dport), (Some(ip4(CLIENT4)), 40100));
    assert_eq!(o.flags, RST | ACK);
    assert_eq!(o.ack, 0xffff_fff1);
    assert_eq!((o.dst_mac, o.src_mac), (CLIENT_MAC, P0_MAC));
    assert!(o.payload.is_empty());
    assert_eq!(out.len(), 14 + 20 + 20);
    assert_eq!(stat(&st.rejected), 1);
    assert_eq!(p.sessions.len(), 0);
}

#[test]
fn tcp_ack_to_empty_service_gets_bare_rst() {
    let (mut p, t, st) = setup();
    let f = tcp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(EMPTY4),
        40101,
        80,
        ACK,
        10,
        777,
        64,
        b"data",
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.flags, RST);
    assert_eq!(o.seq, 777);
    assert_eq!(stat(&st.rejected), 1);
}

#[test]
fn tcp_syn_to_empty_ipv6_service_gets_rst() {
    let (mut p, t, st) = setup();
    let f = c_tcp(ip6(empty6()), 40102, 80, SYN, 41, 0);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(
        (o.src, o.sport, o.dst, o.dport),
        (Some(ip6(empty6())), 80, Some(ip6(client6())), 40102)
    );
    assert_eq!((o.flags, o.ack), (RST | ACK, 42));
}

#[test]
fn udp_to_empty_service_gets_port_unreachable() {
    let (mut p, t, st) = setup();
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(EMPTY4),
        40200,
        53,
        64,
        b"who?",
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((3, 3)));
    assert_eq!((o.src, o.dst), (Some(ip4(EMPTY4)), Some(ip4(CLIENT4))));
    assert_eq!((o.dst_mac, o.src_mac), (CLIENT_MAC, P0_MAC));
    assert!(o.ip_total_len <= 576);
    assert_eq!(out.len(), 14 + o.ip_total_len);
    // Quotes the original IP header + UDP header (the whole datagram here).
    assert!(o.payload.len() >= 28);
    assert_eq!(&o.payload[..28], &f[14..14 + 28]);
    assert_eq!(o.payload, &f[14..]);
    assert_eq!(stat(&st.rejected), 1);
}

#[test]
fn large_udp_to_empty_service_quote_is_capped() {
    let (mut p, t, st) = setup();
    let big = vec![0x5a; 1400];
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(EMPTY4),
        40201,
        53,
        64,
        &big,
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((3, 3)));
    assert_eq!(o.ip_total_len, 576);
    assert_eq!(out.len(), 14 + 576);
    assert_eq!(&o.payload[..], &f[14..14 + 576 - 28]);
}

#[test]
fn ipv6_udp_to_empty_service_gets_port_unreachable() {
    let (mut p, t, st) = setup();
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(empty6()),
        40300,
        53,
        64,
        b"who6?",
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((1, 4)));
    assert_eq!((o.src, o.dst), (Some(ip6(empty6())), Some(ip6(client6()))));
    assert!(o.ip_total_len <= 1280);
    assert_eq!(o.payload, &f[14..]);
    assert_eq!(stat(&st.rejected), 1);

    let big = vec![1u8; 1500];
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(empty6()),
        40301,
        53,
        64,
        &big,
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.ip_total_len, 1280);
    assert_eq!(stat(&st.rejected), 2);
}

// ---------------------------------------------------------------------------
// 6: multi-worker ownership

#[test]
fn flows_are_handed_to_their_owner() {
    let t = table();
    let st = [WorkerStats::default(), WorkerStats::default()];
    let mut w = [
        pipeline_with(0, 2, PipelineConfig::default(), &t),
        pipeline_with(1, 2, PipelineConfig::default(), &t),
    ];
    let mut seen = [false; 2];
    for sport in 40000..40040u16 {
        let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
        seen[owner] = true;
        let other = 1 - owner;
        let syn = c_syn4(sport);
        let (v, _) = run(&mut w[other], &t, &st[other], 0, &syn, NOW, false);
        assert_eq!(v, Verdict::HandOff(owner as u16));
        let (v, out) = run(&mut w[owner], &t, &st[owner], 0, &syn, NOW, true);
        assert_eq!(v, Verdict::Tx(1));
        let backend = parse(&out).dst.unwrap();
        let bi = backend_index(backend);

        // The backend's reply is keyed by its destination (the client endpoint).
        let synack = b_tcp(bi, backend, 8080, sport, SYN | ACK, 1, 1001);
        let (v, _) = run(&mut w[other], &t, &st[other], 1, &synack, NOW, false);
        assert_eq!(v, Verdict::HandOff(owner as u16));
        let (v, out) = run(&mut w[owner], &t, &st[owner], 1, &synack, NOW, true);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(parse(&out).src, Some(ip4(VIP4)));
        // The owner also accepts the packet directly from its own queue.
        let ack = c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 2);
        let (v, out) = run(&mut w[owner], &t, &st[owner], 0, &ack, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(parse(&out).dst, Some(backend));
    }
    assert!(seen[0] && seen[1], "both workers should own some flows");
    assert_eq!(w[0].sessions.len() + w[1].sessions.len(), 40);
}

/// With one worker, an established session keeps being translated after its
/// Service is deleted (like conntrack keeps DNATing established TCP flows).
/// With several workers the hand-off decision uses the *current* table: the
/// client's packets are no longer recognised as "towards a frontend", the
/// owner is computed from `VIP:port` instead of the client endpoint, and they
/// are handed to a worker that has no session.
/// The publisher keeps removed frontends as `retired` so ownership stays
/// stable (see `TableSpec::retired`).
#[test]
fn session_survives_service_removal_with_several_workers() {
    let t = table();
    let mut spec2 = spec();
    let web: Vec<_> = spec2
        .services
        .iter()
        .filter(|s| s.name == "default/web:http")
        .map(|s| s.frontend)
        .collect();
    spec2.services.retain(|s| s.name != "default/web:http");
    spec2.retired = web;
    let t2 = ServiceTable::new(spec2, 2);
    let vip_owner = owner_of(&SockAddr::new(Addr::v4(VIP4), 80), 2);
    let sport = (40000..50000u16)
        .find(|p| owner_of(&SockAddr::new(Addr::v4(CLIENT4), *p), 2) != vip_owner)
        .unwrap();
    let owner = 1 - vip_owner;
    let st = WorkerStats::default();

    // Single worker: the session survives the deletion.
    let mut single = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let (v, out) = run(&mut single, &t, &st, 0, &c_syn4(sport), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let backend = parse(&out).dst;
    single.on_table(&t2);
    let (v, out) = run(
        &mut single,
        &t2,
        &st,
        0,
        &c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 1),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(parse(&out).dst, backend);

    // Owner of two workers: should behave the same.
    let mut w = pipeline_with(owner, 2, PipelineConfig::default(), &t);
    let (v, _) = run(&mut w, &t, &st, 0, &c_syn4(sport), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    w.on_table(&t2);
    let (v, _) = run(
        &mut w,
        &t2,
        &st,
        0,
        &c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 1),
        NOW,
        false,
    );
    assert_eq!(
        v,
        Verdict::Tx(1),
        "the owner hands its own session's packet away"
    );
}

// ---------------------------------------------------------------------------
// 7: backend removal

#[test]
fn removed_backend_keeps_established_sessions_only() {
    let (mut p, t, st) = setup();
    let mut by_flow = StdHashMap::new();
    for sport in 30000..30060u16 {
        let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        by_flow.insert(sport, backend_index(parse(&out).dst.unwrap()));
    }
    assert!(by_flow.values().any(|&b| b == 0));

    let mut spec2 = spec();
    for s in &mut spec2.services {
        s.backends.retain(|b| b.addr != Addr::v4(BACKENDS4[0]));
    }
    let t2 = ServiceTable::new(spec2, 2);
    p.on_table(&t2);

    for (&sport, &bi) in &by_flow {
        let f = c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 1);
        let (v, out) = run(&mut p, &t2, &st, 0, &f, NOW + 10, false);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(
            backend_index(parse(&out).dst.unwrap()),
            bi,
            "flow {sport} moved"
        );
        // And the removed backend's replies are still reverse-translated.
        let r = b_tcp(bi, ip4(BACKENDS4[bi]), 8080, sport, ACK, 1, 1002);
        let (v, out) = run(&mut p, &t2, &st, 1, &r, NOW + 10, false);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(parse(&out).src, Some(ip4(VIP4)));
    }
    for sport in 31000..31500u16 {
        let (v, out) = run(&mut p, &t2, &st, 0, &c_syn4(sport), NOW + 20, false);
        assert_eq!(v, Verdict::Tx(1));
        assert_ne!(
            backend_index(parse(&out).dst.unwrap()),
            0,
            "new flow picked the removed backend"
        );
    }
}

// ---------------------------------------------------------------------------
// 8: TCP state and timeouts

#[test]
fn tcp_close_expires_and_tuple_can_be_reused() {
    let (mut p, t, st) = setup();
    let to = Timeouts::default();
    let sport = 42000;
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let backend = parse(&out).dst.unwrap();
    let bi = backend_index(backend);
    let state = |p: &Pipeline| p.sessions.iter().next().map(|s| (s.tcp, s.expires));
    assert_eq!(state(&p), Some((TcpState::SynSent, NOW + to.tcp_syn)));

    let steps: [(u16, u8); 5] = [
        (1, SYN | ACK),
        (0, ACK),
        (0, FIN | ACK),
        (1, FIN | ACK),
        (0, ACK),
    ];
    let mut now = NOW;
    for (port, flags) in steps {
        now += 10;
        let f = if port == 0 {
            c_tcp(ip4(VIP4), sport, 80, flags, 1001, 1)
        } else {
            b_tcp(bi, backend, 8080, sport, flags, 1, 1001)
        };
        let (v, _) = run(&mut p, &t, &st, port, &f, now, false);
        assert_eq!(v, Verdict::Tx(1 - port));
        if port == 1 && flags == SYN | ACK {
            // Half-open until the client acknowledges the SYN-ACK.
            assert_eq!(state(&p), Some((TcpState::SynRecv, now + to.tcp_syn)));
        }
        if port == 0 && flags == ACK && state(&p).unwrap().0 != TcpState::Closing {
            assert_eq!(
                state(&p),
                Some((TcpState::Established, now + to.tcp_established))
            );
        }
    }
    assert_eq!(state(&p), Some((TcpState::Closing, now + to.tcp_fin)));
    assert_eq!(p.sessions.expire(now + to.tcp_fin - 1, 1000), 0);
    assert_eq!(p.sessions.expire(now + to.tcp_fin, 1000), 1);
    assert!(p.sessions.is_empty());

    // A new SYN on the old tuple is a fresh connection.
    let later = now + to.tcp_fin + 1;
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), later, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(
        parse(&out).dst,
        Some(backend),
        "Maglev picks the same backend for the same tuple"
    );
    assert_eq!(stat(&st.sessions_created), 2);
    assert_eq!(state(&p), Some((TcpState::SynSent, later + to.tcp_syn)));
}

#[test]
fn an_unacknowledged_syn_ack_leaves_the_session_half_open() {
    // Clients that never complete the handshake (a SYN flood from spoofed
    // sources): the backend's SYN-ACK does not establish the session, so
    // it expires on the SYN timeout, not after the established one's 24 h
    // (conntrack's SYN_RECV). The client's ACK — on the fast path —
    // establishes it.
    let (mut p, t, st) = setup();
    let to = Timeouts::default();
    let state = |p: &Pipeline| p.sessions.iter().next().map(|s| (s.tcp, s.expires));
    let sport = 42002;
    let (_, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
    let backend = parse(&out).dst.unwrap();
    let bi = backend_index(backend);
    // The SYN-ACK and its retransmission.
    for k in [1, 2] {
        let syn_ack = b_tcp(bi, backend, 8080, sport, SYN | ACK, 1, 1001);
        let (v, _) = run(&mut p, &t, &st, 1, &syn_ack, NOW + k, false);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(state(&p), Some((TcpState::SynRecv, NOW + k + to.tcp_syn)));
    }
    assert_eq!(p.sessions.expire(NOW + 2 + to.tcp_syn - 1, 1000), 0);
    assert_eq!(p.sessions.expire(NOW + 2 + to.tcp_syn, 1000), 1);
    assert!(p.sessions.is_empty());

    let sport = 42003;
    let (_, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
    let backend = parse(&out).dst.unwrap();
    let bi = backend_index(backend);
    let syn_ack = b_tcp(bi, backend, 8080, sport, SYN | ACK, 1, 1001);
    run(&mut p, &t, &st, 1, &syn_ack, NOW + 1, false);
    let fast = stat(&st.fast_path);
    let ack = c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 2);
    let (v, _) = run(&mut p, &t, &st, 0, &ack, NOW + 2, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.fast_path), fast + 1, "the ACK took the fast path");
    assert_eq!(
        state(&p),
        Some((TcpState::Established, NOW + 2 + to.tcp_established))
    );
}

#[test]
fn syn_reusing_a_closing_tuple_starts_a_fresh_session() {
    let (mut p, t, st) = setup();
    let to = Timeouts::default();
    let sport = 42001;
    let (_, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
    let backend = parse(&out).dst.unwrap();
    let bi = backend_index(backend);
    run(
        &mut p,
        &t,
        &st,
        1,
        &b_tcp(bi, backend, 8080, sport, SYN | ACK, 1, 1001),
        NOW + 1,
        false,
    );
    // A retransmitted SYN on an answered session does not restart it, nor
    // does it complete the handshake.
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW + 2, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.sessions_created), 1);
    assert_eq!(p.sessions.iter().next().unwrap().tcp, TcpState::SynRecv);
    // RST closes it.
    let (v, _) = run(
        &mut p,
        &t,
        &st,
        1,
        &b_tcp(bi, backend, 8080, sport, RST, 1, 0),
        NOW + 3,
        false,
    );
    assert_eq!(v, Verdict::Tx(0));
    let s = p.sessions.iter().next().unwrap();
    assert_eq!(
        (s.tcp, s.expires),
        (TcpState::Closed, NOW + 3 + to.tcp_closed)
    );
    // A SYN reusing the closed tuple before expiry creates a fresh session.
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW + 4, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.sessions_created), 2);
    assert_eq!(p.sessions.len(), 1);
    assert_eq!(p.sessions.iter().next().unwrap().tcp, TcpState::SynSent);
}

#[test]
fn orphan_rst_and_mid_stream_pickup() {
    let (mut p, t, st) = setup();
    let (v, _) = run(
        &mut p,
        &t,
        &st,
        0,
        &c_tcp(ip4(VIP4), 42100, 80, RST, 5, 0),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Drop(DropReason::OrphanRst));
    assert!(p.sessions.is_empty());
    // A mid-stream ACK is picked up as established (conntrack liberal pickup).
    let (v, _) = run(
        &mut p,
        &t,
        &st,
        0,
        &c_tcp(ip4(VIP4), 42101, 80, ACK, 5, 6),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(p.sessions.iter().next().unwrap().tcp, TcpState::Established);
}

#[test]
fn udp_session_expires() {
    let (mut p, t, st) = setup();
    let to = Timeouts::default();
    let q = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        33000,
        53,
        64,
        b"q",
    );
    run(&mut p, &t, &st, 0, &q, NOW, false);
    assert_eq!(p.sessions.expire(NOW + to.udp - 1, 100), 0);
    assert_eq!(p.sessions.expire(NOW + to.udp, 100), 1);
    let (v, _) = run(&mut p, &t, &st, 0, &q, NOW + to.udp, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.sessions_created), 2);
}

// ---------------------------------------------------------------------------
// 9: malformed frames and error paths

#[test]
fn malformed_frames_are_dropped_with_the_right_reason() {
    let syn = c_syn4(43000);
    let udp = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        43001,
        53,
        64,
        b"payload",
    );
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = vec![];
    cases.push((
        "truncated ethernet",
        syn[..10].to_vec(),
        DropReason::Truncated,
    ));
    cases.push((
        "truncated ipv4",
        syn[..14 + 12].to_vec(),
        DropReason::Truncated,
    ));
    let mut f = syn.clone();
    f[14] = 0x44;
    cases.push(("ihl < 5", f, DropReason::BadHeaderLen));
    let mut f = syn.clone();
    f[14] = 0x54;
    cases.push(("bad version", f, DropReason::BadVersion));
    let mut f = syn.clone();
    f[16..18].copy_from_slice(&1000u16.to_be_bytes());
    fix_ip4_csum(&mut f);
    cases.push(("total_len > buffer", f, DropReason::BadTotalLen));
    let mut f = syn.clone();
    f[24] ^= 0xff;
    cases.push(("bad ipv4 checksum", f, DropReason::BadChecksum));
    let mut f = syn.clone();
    f[14 + 20 + 12] = 0x40;
    cases.push(("tcp doff < 5", f, DropReason::BadHeaderLen));
    let mut f = syn.clone();
    f[14 + 20 + 12] = 0xf0;
    cases.push(("tcp doff > segment", f, DropReason::BadHeaderLen));
    let mut f = udp.clone();
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
    cases.push(("udp len < 8", f, DropReason::BadL4Len));
    let mut f = udp.clone();
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
    cases.push(("udp len > datagram", f, DropReason::BadL4Len));
    let mut f = syn.clone();
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x77]);
    cases.push(("wrong dst mac", f, DropReason::NotForUs));
    let mut f = syn.clone();
    f[12..14].copy_from_slice(&[0x88, 0xcc]);
    cases.push(("unknown ethertype", f, DropReason::UnknownEthertype));
    let mut f = udp.clone();
    f[14 + 6] |= 0x20; // MF
    fix_ip4_csum(&mut f);
    cases.push(("udp first fragment", f, DropReason::Fragment));
    let mut f = udp.clone();
    f[14 + 7] = 0x10; // offset 128
    fix_ip4_csum(&mut f);
    cases.push(("udp later fragment", f, DropReason::Fragment));
    cases.push((
        "ttl 1",
        tcp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(VIP4),
            43002,
            80,
            SYN,
            1,
            0,
            1,
            &[],
        ),
        DropReason::TtlExceeded,
    ));
    cases.push((
        "no route",
        tcp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4([198, 19, 5, 5]),
            43003,
            80,
            SYN,
            1,
            0,
            64,
            &[],
        ),
        DropReason::NoRoute,
    ));
    cases.push((
        "tcp to node address",
        tcp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(NODE0),
            43004,
            22,
            SYN,
            1,
            0,
            64,
            &[],
        ),
        DropReason::LocalUnhandled,
    ));
    let mut f = syn.clone();
    f[12..14].copy_from_slice(&[0x81, 0x00]);
    cases.push(("tagged frame on untagged port", f, DropReason::VlanMismatch));
    let mut f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(vip6()),
        1,
        53,
        64,
        b"x",
    );
    f[18..20].copy_from_slice(&500u16.to_be_bytes());
    cases.push(("ipv6 payload_len > buffer", f, DropReason::BadL4Len));
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(vip6()),
        1,
        53,
        64,
        b"x",
    );
    cases.push((
        "truncated ipv6",
        f[..14 + 30].to_vec(),
        DropReason::Truncated,
    ));

    for (name, frame, want) in cases {
        let (mut p, t, st) = setup();
        let (v, _) = run(&mut p, &t, &st, 0, &frame, NOW, false);
        assert_eq!(v, Verdict::Drop(want), "{name}");
        // Same verdict on a handed-off copy and no panic on a non-owner worker.
        let (v2, _) = run(&mut p, &t, &st, 0, &frame, NOW, true);
        assert_eq!(v2, Verdict::Drop(want), "{name} (handed off)");
    }
}

#[test]
fn unknown_port_is_dropped() {
    let (mut p, t, st) = setup();
    let (v, _) = run(&mut p, &t, &st, 7, &c_syn4(1), NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::BadPort));
}

#[test]
fn icmp_fragments_are_routed() {
    let (mut p, t, st) = setup();
    let mut f = echo_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(BACKENDS4[1]),
        1,
        1,
        64,
    );
    f[14 + 6] |= 0x20;
    fix_ip4_csum(&mut f);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    // etherparse does not slice the transport of a fragment: check by hand.
    assert_eq!(&out[0..6], &backend_mac(1));
    assert_eq!(out[14 + 8], 63);
    let h = Ipv4HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
    assert!(h.more_fragments());
}

#[test]
fn unknown_neighbour_solicits_and_then_forwards() {
    let (mut p, t, st) = setup();
    let target = [198, 18, 1, 50];
    let f = tcp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(target),
        43100,
        80,
        SYN,
        1,
        0,
        64,
        &[],
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(
        v,
        Verdict::Hold {
            port: 1,
            addr: Addr::v4(target)
        }
    );
    // Held with the L2 header written except the destination MAC.
    assert_eq!(&out[0..6], &[0; 6]);
    assert_eq!(&out[6..12], &P1_MAC);
    assert_eq!(out[14 + 8], 63);
    assert_eq!(
        p.take_solicits().collect::<Vec<_>>(),
        vec![(1, Addr::v4(target))]
    );
    assert_eq!(p.take_solicits().count(), 0);
    // Still pending: no second solicitation within the retry interval.
    let (v, _) = run(&mut p, &t, &st, 0, &f, NOW + 1, false);
    assert_eq!(
        v,
        Verdict::Hold {
            port: 1,
            addr: Addr::v4(target)
        }
    );
    assert_eq!(p.take_solicits().count(), 0);
    // The ARP reply teaches us the MAC; the packet is then forwarded.
    let mac = [2, 0, 0, 0, 1, 0x50];
    let reply = arp_frame(2, P1_MAC, mac, target, P1_MAC, NODE1);
    let (v, _) = run(&mut p, &t, &st, 1, &reply, NOW + 2, false);
    assert_eq!(v, Verdict::Consumed);
    let learned: Vec<_> = p.take_learned().collect();
    assert_eq!(
        learned,
        vec![crate::neigh::NeighborUpdate {
            addr: Addr::v4(target),
            mac: MacAddr(mac),
            port: 1
        }]
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW + 3, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(
        (o.dst_mac, o.src_mac, o.dst, o.dport),
        (mac, P1_MAC, Some(ip4(target)), 80)
    );
    assert_eq!(stat(&st.routed), 3);
    assert_eq!(stat(&st.sessions_created), 0);
}

/// Two workers whose neighbour caches a flood of unsolicited neighbours
/// left above their high-water mark.
fn flooded_workers(t: &ServiceTable, st: &WorkerStats) -> (Pipeline, Pipeline) {
    let cfg = PipelineConfig {
        neighbors: 16,
        ..Default::default()
    };
    let mut ps = (pipeline_with(0, 2, cfg, t), pipeline_with(1, 2, cfg, t));
    for p in [&mut ps.0, &mut ps.1] {
        for i in 0..16u8 {
            let mac = [2, 0, 0, 0, 2, i];
            let req = arp_frame(1, [0xff; 6], mac, [198, 18, 0, 100 + i], [0; 6], NODE0);
            assert_eq!(run(p, t, st, 0, &req, NOW, false).0, Verdict::Tx(0));
        }
        assert!(p.neighbors.refused() > 0, "the flood filled the cache");
        let _ = p.take_learned().count();
    }
    ps
}

#[test]
fn an_answer_another_worker_asked_for_reaches_it_above_the_high_water_mark() {
    // Answers from one neighbour always reach the same queue: after a
    // flood, the worker they reach refuses a new neighbour, and the worker
    // that solicited it must still learn it (through the other).
    let t = table();
    let st = WorkerStats::default();
    let (mut p0, mut p1) = flooded_workers(&t, &st);
    let v4_target = [198, 18, 1, 50];
    let v6_target = v6("2001:2:0:1::50");
    let mac = [2, 0, 0, 0, 1, 0x50];
    let to4 = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(v4_target),
        1000,
        2000,
        64,
        b"x",
    );
    let to6 = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(v6_target),
        1000,
        2000,
        64,
        b"x",
    );
    let arp_reply = |ip: [u8; 4], mac: [u8; 6]| arp_frame(2, P1_MAC, mac, ip, P1_MAC, NODE1);
    let na = |target: Ipv6Addr, flags: u8| {
        let node = v6("2001:2:0:1::1");
        ndp_frame(
            mac,
            P1_MAC,
            target,
            node,
            136,
            flags,
            target,
            Some((2, mac)),
            255,
        )
    };
    for (frame, target, answer) in [
        (&to4, Addr::v4(v4_target), arp_reply(v4_target, mac)),
        (&to6, Addr::from(v6_target), na(v6_target, 0x60)),
    ] {
        // Worker 1 holds the packet and solicits the neighbour.
        let (v, _) = run(&mut p1, &t, &st, 0, frame, NOW, true);
        assert_eq!(
            v,
            Verdict::Hold {
                port: 1,
                addr: target
            }
        );
        assert_eq!(p1.take_solicits().collect::<Vec<_>>(), vec![(1, target)]);
        // The answer reaches worker 0, which refuses it and passes it on.
        let refused = p0.neighbors.refused();
        assert_eq!(
            run(&mut p0, &t, &st, 1, &answer, NOW + 1, false).0,
            Verdict::Consumed
        );
        assert_eq!(p0.neighbors.known(&target), None);
        assert_eq!(p0.neighbors.refused(), refused + 1);
        assert_eq!(p0.take_learned().count(), 0);
        let passed: Vec<_> = p0.take_answers().collect();
        assert_eq!(passed.len(), 1, "{target:?}");
        for u in passed {
            p1.answer_from_peer(u, NOW + 1);
        }
        assert_eq!(p1.neighbors.known(&target), Some(MacAddr(mac)));
        let (v, out) = run(&mut p1, &t, &st, 0, frame, NOW + 2, true);
        assert_eq!((v, parse(&out).dst_mac), (Verdict::Tx(1), mac));
    }
    // A peer takes a passed-on answer only to complete an entry it is
    // resolving: not a new neighbour (even below its mark), not a change
    // of one it knows; and its refusals are its own.
    let mut fresh = pipeline_with(1, 2, PipelineConfig::default(), &t);
    let other = [2, 0, 0, 0, 1, 0x99];
    let refused = p1.neighbors.refused();
    run(
        &mut p0,
        &t,
        &st,
        1,
        &arp_reply([198, 18, 1, 51], mac),
        NOW + 3,
        false,
    );
    run(
        &mut p0,
        &t,
        &st,
        1,
        &arp_reply(v4_target, other),
        NOW + 3,
        false,
    );
    let passed: Vec<_> = p0.take_answers().collect();
    assert_eq!(passed.len(), 2);
    for u in passed {
        p1.answer_from_peer(u, NOW + 3);
        fresh.answer_from_peer(u, NOW + 3);
    }
    for p in [&p1, &fresh] {
        assert_eq!(p.neighbors.known(&Addr::v4([198, 18, 1, 51])), None);
    }
    assert_eq!(p1.neighbors.known(&Addr::v4(v4_target)), Some(MacAddr(mac)));
    assert_eq!(p1.neighbors.refused(), refused);
    // Unsolicited advertisements, requests and answers that were not
    // refused (a static neighbour's) are not passed on, and at most
    // MAX_ANSWERS answers are per loop.
    let refused = p0.neighbors.refused();
    let unsolicited = na(v6("2001:2:0:1::52"), 0x20);
    let request = arp_frame(1, [0xff; 6], mac, [198, 18, 1, 53], [0; 6], NODE1);
    let known = arp_reply(BACKENDS4[0], backend_mac(0));
    for f in [unsolicited, request, known] {
        run(&mut p0, &t, &st, 1, &f, NOW + 4, false);
    }
    assert_eq!(p0.neighbors.refused(), refused + 2);
    assert_eq!(p0.take_answers().count() + p0.take_learned().count(), 0);
    for i in 0..10 {
        run(
            &mut p0,
            &t,
            &st,
            1,
            &arp_reply([198, 18, 1, 60 + i], mac),
            NOW + 5,
            false,
        );
    }
    assert_eq!(p0.take_answers().count(), crate::pipeline::MAX_ANSWERS);
}

#[test]
fn full_session_table_refuses_new_flows_only() {
    let t = table();
    let st = WorkerStats::default();
    let mut p = pipeline_with(
        0,
        1,
        PipelineConfig {
            sessions: 2,
            ..Default::default()
        },
        &t,
    );
    let mut backends = vec![];
    for sport in [44000u16, 44001] {
        let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        backends.push(parse(&out).dst.unwrap());
    }
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(44002), NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::SessionTableFull));
    let udp = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        44003,
        53,
        64,
        b"q",
    );
    let (v, _) = run(&mut p, &t, &st, 0, &udp, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::SessionTableFull));
    for (i, sport) in [44000u16, 44001].into_iter().enumerate() {
        let (v, out) = run(
            &mut p,
            &t,
            &st,
            0,
            &c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 1),
            NOW,
            false,
        );
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(parse(&out).dst, Some(backends[i]));
        let r = b_tcp(
            backend_index(backends[i]),
            backends[i],
            8080,
            sport,
            ACK,
            1,
            1001,
        );
        let (v, _) = run(&mut p, &t, &st, 1, &r, NOW, false);
        assert_eq!(v, Verdict::Tx(0));
    }
    // Routed (non-Service) traffic is not affected by a full table.
    let (v, _) = run(
        &mut p,
        &t,
        &st,
        0,
        &echo_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(BACKENDS4[0]),
            1,
            1,
            64,
        ),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(1));
}

// ---------------------------------------------------------------------------
// 10: ARP and NDP

fn arp_fields(f: &[u8]) -> (u16, [u8; 6], [u8; 4], [u8; 6], [u8; 4]) {
    let a = crate::packet::ArpPacket::new_checked(&f[14..]).unwrap();
    (
        a.operation(),
        a.sender_hw_addr().0,
        a.sender_proto_addr().octets(),
        a.target_hw_addr().0,
        a.target_proto_addr().octets(),
    )
}

#[test]
fn arp_request_for_node_address_is_answered_and_sender_learned() {
    let (mut p, t, st) = setup();
    let spa = [198, 18, 0, 3];
    let req = arp_frame(1, [0xff; 6], OTHER_MAC, spa, [0; 6], NODE0);
    let (v, out) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(out.len(), 42);
    assert_eq!(&out[0..6], &OTHER_MAC);
    assert_eq!(&out[6..12], &P0_MAC);
    assert_eq!(&out[12..14], &[0x08, 0x06]);
    assert_eq!(arp_fields(&out), (2, P0_MAC, NODE0, OTHER_MAC, spa));
    assert_eq!(stat(&st.neighbor_replies), 1);
    let learned: Vec<_> = p.take_learned().collect();
    assert_eq!(
        learned,
        vec![crate::neigh::NeighborUpdate {
            addr: Addr::v4(spa),
            mac: MacAddr(OTHER_MAC),
            port: 0
        }]
    );
    // The learned neighbour is usable: a routed packet to it is forwarded.
    let f = echo_frame(
        backend_mac(0),
        P1_MAC,
        ip4(BACKENDS4[0]),
        ip4(spa),
        9,
        9,
        64,
    );
    let (v, out) = run(&mut p, &t, &st, 1, &f, NOW + 1, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(parse(&out).dst_mac, OTHER_MAC);
}

#[test]
fn arp_request_for_vip_is_answered() {
    let (mut p, t, st) = setup();
    let req = arp_frame(1, [0xff; 6], CLIENT_MAC, CLIENT4, [0; 6], VIP4);
    let (v, out) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(arp_fields(&out), (2, P0_MAC, VIP4, CLIENT_MAC, CLIENT4));
    // A static neighbour is not "learned".
    assert_eq!(p.take_learned().count(), 0);
}

#[test]
fn arp_request_for_someone_else_is_consumed() {
    let (mut p, t, st) = setup();
    let req = arp_frame(
        1,
        [0xff; 6],
        OTHER_MAC,
        [198, 18, 0, 3],
        [0; 6],
        [198, 18, 0, 9],
    );
    let (v, _) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(
        p.take_learned().count(),
        0,
        "gleaning must not create entries"
    );
    assert_eq!(stat(&st.neighbor_replies), 0);
    // Truncated / non-Ethernet ARP.
    let (v, _) = run(&mut p, &t, &st, 0, &req[..30], NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::Truncated));
    let mut bad = req.clone();
    bad[15] = 6; // htype 6
    let (v, _) = run(&mut p, &t, &st, 0, &bad, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::Unsupported));
}

#[test]
fn build_solicit_makes_arp_and_ns() {
    let (p, t, _) = setup();
    let mut buf = [0u8; 128];
    let n = p
        .build_solicit(&t, 1, Addr::v4([198, 18, 1, 50]), &mut buf)
        .unwrap();
    assert_eq!(n, 60);
    assert_eq!(&buf[0..6], &[0xff; 6]);
    assert_eq!(&buf[6..12], &P1_MAC);
    assert_eq!(&buf[12..14], &[0x08, 0x06]);
    assert_eq!(&buf[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
    assert_eq!(
        arp_fields(&buf[..n]),
        (1, P1_MAC, NODE1, [0; 6], [198, 18, 1, 50])
    );

    let target = v6("2001:2:0:1::50");
    let n = p
        .build_solicit(&t, 1, Addr::from(target), &mut buf)
        .unwrap();
    let o = parse(&buf[..n]);
    assert_eq!(o.dst_mac, [0x33, 0x33, 0xff, 0, 0, 0x50]);
    assert_eq!(o.src_mac, P1_MAC);
    assert_eq!(o.src, Some(ip6(v6("2001:2:0:1::1"))));
    assert_eq!(o.dst, Some(ip6(snm(target))));
    assert_eq!(o.ttl, 255);
    assert_eq!(o.icmp, Some((135, 0)));
    assert_eq!(&o.icmp_msg[8..24], &target.octets());
    assert_eq!(&o.icmp_msg[24..32], &[1, 1, 2, 0, 0, 0, 0, 1]);

    // No address of that family on the port / buffer too small.
    let t4 = ServiceTable::new(
        TableSpec {
            interfaces: vec![Interface {
                port: 0,
                addr: Addr::v4(NODE0),
                prefix_len: 24,
            }],
            ..Default::default()
        },
        1,
    );
    assert_eq!(p.build_solicit(&t4, 0, Addr::from(target), &mut buf), None);
    assert_eq!(
        p.build_solicit(&t, 1, Addr::v4([198, 18, 1, 50]), &mut buf[..40]),
        None
    );
    assert_eq!(
        p.build_solicit(&t, 9, Addr::v4([198, 18, 1, 50]), &mut buf),
        None
    );
}

#[test]
fn neighbor_solicitation_is_answered() {
    let (mut p, t, st) = setup();
    let src = v6("2001:2::3");
    let ns = ndp_frame(
        OTHER_MAC,
        [0x33, 0x33, 0xff, 0, 0, 1],
        src,
        snm(node6_0()),
        135,
        0,
        node6_0(),
        Some((1, OTHER_MAC)),
        255,
    );
    let (v, out) = run(&mut p, &t, &st, 0, &ns, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!((o.dst_mac, o.src_mac), (OTHER_MAC, P0_MAC));
    assert_eq!((o.src, o.dst), (Some(ip6(node6_0())), Some(ip6(src))));
    assert_eq!(o.ttl, 255);
    assert_eq!(o.icmp, Some((136, 0)));
    assert_eq!(o.icmp_msg[4] & 0xe0, 0x60, "solicited + override");
    assert_eq!(&o.icmp_msg[8..24], &node6_0().octets());
    assert_eq!(&o.icmp_msg[24..32], &[2, 1, 2, 0, 0, 0, 0, 0]);
    assert_eq!(out.len(), 14 + 40 + 32);
    assert_eq!(stat(&st.neighbor_replies), 1);
    assert_eq!(
        p.take_learned().collect::<Vec<_>>(),
        vec![crate::neigh::NeighborUpdate {
            addr: Addr::from(src),
            mac: MacAddr(OTHER_MAC),
            port: 0
        }]
    );
}

#[test]
fn dad_solicitation_is_answered_to_all_nodes() {
    let (mut p, t, st) = setup();
    // DAD: unspecified source, no source LLA option; pad so the reply fits.
    let mut ns = ndp_frame(
        OTHER_MAC,
        [0x33, 0x33, 0xff, 0, 0, 1],
        Ipv6Addr::UNSPECIFIED,
        snm(node6_0()),
        135,
        0,
        node6_0(),
        None,
        255,
    );
    ns.extend_from_slice(&[0; 8]);
    let (v, out) = run(&mut p, &t, &st, 0, &ns, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.dst_mac, [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(o.dst, Some(ip6(v6("ff02::1"))));
    assert_eq!(o.icmp, Some((136, 0)));
    assert_eq!(o.icmp_msg[4] & 0xe0, 0x20, "override only, not solicited");
}

/// RFC 4861 7.2.2: a unicast NS (NUD) SHOULD, and a DAD NS MUST NOT, carry a
/// source link-layer option, so a 24-byte NS is legal. The NA answer is 32
/// bytes and does not fit in the received buffer: `emit_neighbor_advert`
/// returns 0 and `IcmpPacket::new_unchecked(&mut d[l4..l4 + 0]).set_checksum`
/// indexes out of bounds -> panic on the worker.
#[test]
fn short_neighbor_solicitation_does_not_panic() {
    let (mut p, t, st) = setup();
    // Unicast NUD probe without the source LLA option.
    let ns = ndp_frame(
        CLIENT_MAC,
        P0_MAC,
        client6(),
        node6_0(),
        135,
        0,
        node6_0(),
        None,
        255,
    );
    assert_eq!(ns.len(), 14 + 40 + 24);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut p, &t, &st, 0, &ns, NOW, false)
    }));
    let (v, out) = r.expect("process panicked on a 24-byte Neighbor Solicitation");
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((136, 0)));
    assert_eq!(&o.icmp_msg[24..32], &[2, 1, 2, 0, 0, 0, 0, 0]);
    // Same for DAD (unspecified source, options forbidden).
    let ns = ndp_frame(
        OTHER_MAC,
        [0x33, 0x33, 0xff, 0, 0, 1],
        Ipv6Addr::UNSPECIFIED,
        snm(node6_0()),
        135,
        0,
        node6_0(),
        None,
        255,
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut p, &t, &st, 0, &ns, NOW, false)
    }));
    assert!(matches!(
        r.expect("process panicked on a DAD NS").0,
        Verdict::Tx(0)
    ));
}

#[test]
fn invalid_ndp_is_dropped_and_foreign_targets_consumed() {
    let (mut p, t, st) = setup();
    let dmac = [0x33, 0x33, 0xff, 0, 0, 1];
    let ns = ndp_frame(
        OTHER_MAC,
        dmac,
        v6("2001:2::3"),
        snm(node6_0()),
        135,
        0,
        node6_0(),
        Some((1, OTHER_MAC)),
        64,
    );
    let (v, _) = run(&mut p, &t, &st, 0, &ns, NOW, false);
    assert_eq!(
        v,
        Verdict::Drop(DropReason::Unsupported),
        "hop limit != 255"
    );
    let mut ns = ndp_frame(
        OTHER_MAC,
        dmac,
        v6("2001:2::3"),
        snm(node6_0()),
        135,
        0,
        node6_0(),
        Some((1, OTHER_MAC)),
        255,
    );
    let l = ns.len();
    ns[l - 1] ^= 1;
    let (v, _) = run(&mut p, &t, &st, 0, &ns, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::Unsupported), "bad checksum");
    let other = v6("2001:2::77");
    let ns = ndp_frame(
        OTHER_MAC,
        [0x33, 0x33, 0xff, 0, 0, 0x77],
        v6("2001:2::3"),
        snm(other),
        135,
        0,
        other,
        Some((1, OTHER_MAC)),
        255,
    );
    let (v, _) = run(&mut p, &t, &st, 0, &ns, NOW, false);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(p.take_learned().count(), 0);
}

#[test]
fn neighbor_advertisement_is_learned() {
    let (mut p, t, st) = setup();
    let target = v6("2001:2:0:1::50");
    let mac = [2, 0, 0, 0, 1, 0x50];
    // Routed traffic to it first misses and solicits.
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(target),
        1000,
        2000,
        64,
        b"x",
    );
    let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(
        v,
        Verdict::Hold {
            port: 1,
            addr: Addr::from(target)
        }
    );
    assert_eq!(
        p.take_solicits().collect::<Vec<_>>(),
        vec![(1, Addr::from(target))]
    );
    let na = ndp_frame(
        mac,
        P1_MAC,
        target,
        v6("2001:2:0:1::1"),
        136,
        0x60,
        target,
        Some((2, mac)),
        255,
    );
    let (v, _) = run(&mut p, &t, &st, 1, &na, NOW + 1, false);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(p.take_learned().count(), 1);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW + 2, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(parse(&out).dst_mac, mac);
}

// ---------------------------------------------------------------------------
// 11: ICMP echo

#[test]
fn echo_to_node_address_is_answered() {
    let (mut p, t, st) = setup();
    let f = echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 0x1234, 7, 17);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((0, 0)));
    assert_eq!((o.src, o.dst), (Some(ip4(NODE0)), Some(ip4(CLIENT4))));
    assert_eq!((o.dst_mac, o.src_mac), (CLIENT_MAC, P0_MAC));
    assert_eq!(o.ttl, 64);
    assert_eq!(&o.icmp_msg[4..8], &[0x12, 0x34, 0, 7]);
    assert_eq!(o.payload, b"ping-payload-0123456789");

    let f = echo_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(node6_0()),
        0x4321,
        8,
        64,
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((129, 0)));
    assert_eq!((o.src, o.dst), (Some(ip6(node6_0())), Some(ip6(client6()))));
    assert_eq!(&o.icmp_msg[4..8], &[0x43, 0x21, 0, 8]);
    assert_eq!(stat(&st.echo_replies), 2);

    // The other port's address answers too (it is a node address).
    let f = echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE1), 1, 1, 64);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(parse(&out).src, Some(ip4(NODE1)));
}

#[test]
fn echo_to_routed_address_is_forwarded() {
    let (mut p, t, st) = setup();
    let f = echo_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(BACKENDS4[2]),
        5,
        6,
        64,
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((8, 0)));
    assert_eq!(
        (o.src, o.dst),
        (Some(ip4(CLIENT4)), Some(ip4(BACKENDS4[2])))
    );
    assert_eq!((o.dst_mac, o.src_mac, o.ttl), (backend_mac(2), P1_MAC, 63));

    let f = echo_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(backends6()[1]),
        5,
        6,
        64,
    );
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((128, 0)));
    assert_eq!((o.dst_mac, o.ttl), (backend_mac(1), 63));
    assert_eq!(stat(&st.routed), 2);
    assert_eq!(stat(&st.echo_replies), 0);

    // Other ICMP types to a node address are not answered.
    let mut v4 = Vec::new();
    ip_step(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 64)
        .icmpv4_raw(13, 0, [0; 4])
        .write(&mut v4, &[0; 12])
        .unwrap();
    let (v, _) = run(&mut p, &t, &st, 0, &v4, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::LocalUnhandled));
}

// ---------------------------------------------------------------------------
// Extra corner cases

/// Ones-complement sum (RFC 1071) for constructing test inputs.
fn ocsum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

#[test]
fn ipv4_options_are_skipped_when_rewriting() {
    let (mut p, t, st) = setup();
    let mut f = c_syn4(46000);
    // IHL 6 with NOP NOP NOP EOL; TCP checksum is unaffected by IP options.
    f.splice(34..34, [1, 1, 1, 0]);
    f[14] = 0x46;
    let tl = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ip4_csum(&mut f);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!((o.sport, o.dport, o.flags), (46000, 8080, SYN));
    assert_eq!(&out[34..38], &[1, 1, 1, 0]);
    // Reject path with options: RST is a plain 20-byte header.
    let mut f = c_tcp(ip4(EMPTY4), 46001, 80, SYN, 5, 0);
    f.splice(34..34, [1, 1, 1, 0]);
    f[14] = 0x46;
    f[16..18].copy_from_slice(&(tl).to_be_bytes());
    fix_ip4_csum(&mut f);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(
        (o.flags, o.ack, o.sport, o.dport),
        (RST | ACK, 6, 80, 46001)
    );
}

#[test]
fn ipv6_extension_headers_are_skipped_when_rewriting() {
    let (mut p, t, st) = setup();
    let mut f = c_tcp(ip6(vip6()), 46100, 80, SYN, 1, 0);
    // Insert a Destination Options header (PadN) between IPv6 and TCP.
    f.splice(54..54, [6, 0, 1, 4, 0, 0, 0, 0]);
    f[20] = 60;
    let pl = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&pl.to_be_bytes());
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(
        (o.src, o.sport, o.dport),
        (Some(ip6(client6())), 46100, 8080)
    );
    assert_eq!(&out[54..62], &[6, 0, 1, 4, 0, 0, 0, 0]);
}

#[test]
fn ethernet_padding_is_not_quoted_or_forwarded_as_payload() {
    let (mut p, t, st) = setup();
    let mut f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(EMPTY4),
        46200,
        53,
        64,
        b"x",
    );
    assert_eq!(f.len(), 43);
    f.resize(60, 0xee);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((3, 3)));
    assert_eq!(o.payload, &f[14..43]);
    assert_eq!(out.len(), 14 + 20 + 8 + 29);

    let mut f = c_syn4(46201);
    f.resize(60, 0xee);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert!(o.payload.is_empty());
    assert_eq!(o.ip_total_len, 40);
}

#[test]
fn udp_checksum_that_becomes_zero_is_sent_as_ffff() {
    for (client, vip) in [(ip4(CLIENT4), ip4(VIP4)), (ip6(client6()), ip6(vip6()))] {
        let (mut p, t, st) = setup();
        let q = udp_frame(CLIENT_MAC, P0_MAC, client, vip, 46300, 53, 64, &[0, 0]);
        let (_, out) = run(&mut p, &t, &st, 0, &q, NOW, false);
        // Sum of the translated datagram (checksum field zeroed) with its pseudo-header.
        let o = parse(&out);
        let (l4, pseudo) = match (o.src.unwrap(), o.dst.unwrap()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut ph = s.octets().to_vec();
                ph.extend_from_slice(&d.octets());
                ph.extend_from_slice(&[0, 17, 0, 10]);
                (34, ph)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ph = s.octets().to_vec();
                ph.extend_from_slice(&d.octets());
                ph.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 17]);
                (54, ph)
            }
            _ => unreachable!(),
        };
        let mut dgram = out[l4..l4 + 10].to_vec();
        dgram[6] = 0;
        dgram[7] = 0;
        let sum = ocsum(&dgram, ocsum(&pseudo, 0));
        // Payload word that makes the translated sum 0xffff, i.e. a computed checksum of 0.
        let w = (!(sum as u16)).to_be_bytes();
        let (mut p, t, st) = setup();
        let q = udp_frame(CLIENT_MAC, P0_MAC, client, vip, 46300, 53, 64, &w);
        let (v, out) = run(&mut p, &t, &st, 0, &q, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        assert_eq!(
            o.udp_csum,
            Some(0xffff),
            "{client}: zero must be sent as 0xffff"
        );
    }
}

#[test]
fn stale_neighbour_is_used_and_reprobed() {
    let (mut p, t, st) = setup();
    let spa = [198, 18, 0, 3];
    let req = arp_frame(1, [0xff; 6], OTHER_MAC, spa, [0; 6], NODE0);
    run(&mut p, &t, &st, 0, &req, NOW, false);
    p.take_learned().count();
    let f = echo_frame(
        backend_mac(0),
        P1_MAC,
        ip4(BACKENDS4[0]),
        ip4(spa),
        9,
        9,
        64,
    );
    let reachable = crate::neigh::NeighborTimers::default().reachable;
    let (v, _) = run(&mut p, &t, &st, 1, &f, NOW + reachable - 1, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(p.take_solicits().count(), 0);
    let (v, out) = run(&mut p, &t, &st, 1, &f, NOW + reachable, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(parse(&out).dst_mac, OTHER_MAC);
    assert_eq!(
        p.take_solicits().collect::<Vec<_>>(),
        vec![(0, Addr::v4(spa))]
    );
}

#[test]
fn static_neighbour_is_not_poisoned_by_arp() {
    let (mut p, t, st) = setup();
    let req = arp_frame(1, [0xff; 6], OTHER_MAC, CLIENT4, [0; 6], NODE0);
    let (v, _) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(p.take_learned().count(), 0);
    let f = echo_frame(
        backend_mac(0),
        P1_MAC,
        ip4(BACKENDS4[0]),
        ip4(CLIENT4),
        9,
        9,
        64,
    );
    let (v, out) = run(&mut p, &t, &st, 1, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(parse(&out).dst_mac, CLIENT_MAC);
}

#[test]
fn multicast_destinations_are_not_routed() {
    let (mut p, t, st) = setup();
    let f = udp_frame(
        CLIENT_MAC,
        [1, 0, 0x5e, 0, 0, 0xfb],
        ip4(CLIENT4),
        ip4([224, 0, 0, 251]),
        5353,
        5353,
        255,
        b"m",
    );
    let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::Multicast));
    let f = udp_frame(
        CLIENT_MAC,
        [0x33, 0x33, 0, 0, 0, 0xfb],
        ip6(client6()),
        ip6(v6("ff02::fb")),
        5353,
        5353,
        255,
        b"m",
    );
    let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::Multicast));
}

#[test]
fn dnat_to_unresolved_backend_is_held() {
    let mut s = spec();
    s.neighbors
        .retain(|n| !BACKENDS4.iter().any(|b| n.addr == Addr::v4(*b)));
    let t = ServiceTable::new(s, 1);
    let st = WorkerStats::default();
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(46400), NOW, false);
    let Verdict::Hold { port: 1, addr } = v else {
        panic!("{v:?}")
    };
    assert_eq!(p.take_solicits().collect::<Vec<_>>(), vec![(1, addr)]);
    // The held frame is already translated.
    assert_eq!(&out[30..34], &addr.v4_octets());
    assert_eq!(&out[36..38], &8080u16.to_be_bytes());
    assert_eq!(p.sessions.len(), 1);
}

// ---------------------------------------------------------------------------
// 12: properties

fn prop_table() -> ServiceTable {
    let mut s = spec();
    for i in 3..=254u8 {
        s.neighbors.push(StaticNeighbor {
            addr: Addr::v4([198, 18, 0, i]),
            mac: MacAddr([2, 0, 0, 0, 0xc0, i]),
            port: 0,
        });
    }
    ServiceTable::new(s, 1)
}

fn base_frames() -> Vec<Vec<u8>> {
    vec![
        c_syn4(45000),
        udp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(VIP4),
            45001,
            53,
            64,
            b"q",
        ),
        udp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(EMPTY4),
            45002,
            53,
            64,
            b"q",
        ),
        c_tcp(ip4(EMPTY4), 45003, 80, SYN, 1, 0),
        c_tcp(ip6(vip6()), 45004, 80, SYN, 1, 0),
        udp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip6(client6()),
            ip6(empty6()),
            45005,
            53,
            64,
            b"q",
        ),
        echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 1, 1, 64),
        echo_frame(CLIENT_MAC, P0_MAC, ip6(client6()), ip6(node6_0()), 1, 1, 64),
        arp_frame(1, [0xff; 6], OTHER_MAC, [198, 18, 0, 3], [0; 6], NODE0),
        sctp_flows::c_sctp(ip4(VIP4), 45006, 0, &[(1, &[0; 16])]),
        sctp_flows::c_sctp(ip6(empty6()), 45007, 0, &[(1, &[0; 16])]),
        sctp_flows::c_sctp(ip4(VIP4), 45008, 9, &[(10, b"cookie"), (0, b"data")]),
    ]
}

fn no_panic(frame: &[u8], handed_off: bool, n_workers: u16) {
    let t = table();
    let st = WorkerStats::default();
    for id in 0..n_workers {
        let mut p = pipeline_with(
            id,
            n_workers,
            PipelineConfig {
                sessions: 64,
                ..Default::default()
            },
            &t,
        );
        let mut b = VecBuf::new(frame);
        let v = p.process(&t, &st, 0, &mut b, NOW, handed_off);
        if let Verdict::Tx(port) = v {
            assert!(port < 2);
            assert!(b.data().len() >= 14);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), handed_off: bool, et in 0usize..4) {
        no_panic(&bytes, handed_off, 1);
        // And with our MAC and an interesting ethertype, so parsing goes deeper.
        let mut f = bytes.clone();
        if f.len() >= 14 {
            f[0..6].copy_from_slice(&P0_MAC);
            let e: [u8; 2] = [[0x08, 0x00], [0x86, 0xdd], [0x08, 0x06], [0x81, 0x00]][et];
            f[12..14].copy_from_slice(&e);
            if f.len() > 14 && et == 0 { f[14] = 0x45; }
            if f.len() > 14 && et == 1 { f[14] = 0x60; }
        }
        no_panic(&f, handed_off, 2);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..12,
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        handed_off: bool,
    ) {
        let mut f = base_frames().swap_remove(which);
        for (i, b) in muts {
            let i = i.index(f.len());
            f[i] = b;
        }
        if let Some(c) = cut {
            let n = c.index(f.len() + 1);
            f.truncate(n);
        }
        no_panic(&f, handed_off, 1);
        no_panic(&f, handed_off, 2);
    }

    #[test]
    fn forward_then_reverse_restores_the_tuple(
        host in 3u8..=254,
        sport in 1024u16..=65535,
        udp: bool,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        reply_payload in proptest::collection::vec(any::<u8>(), 0..64),
        seq: u32,
    ) {
        let t = prop_table();
        let st = WorkerStats::default();
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let client = ip4([198, 18, 0, host]);
        let cmac = [2, 0, 0, 0, 0xc0, host];
        let (fwd_frame, vport) = if udp {
            (udp_frame(cmac, P0_MAC, client, ip4(VIP4), sport, 53, 64, &payload), 53)
        } else {
            (tcp_frame(cmac, P0_MAC, client, ip4(VIP4), sport, 80, SYN, seq, 0, 64, &payload), 80)
        };
        let (v, out) = run(&mut p, &t, &st, 0, &fwd_frame, NOW, false);
        prop_assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        let backend = o.dst.unwrap();
        let bi = backend_index(backend);
        prop_assert_eq!((o.src, o.sport), (Some(client), sport));
        prop_assert_eq!(o.dport, if udp { 5353 } else { 8080 });
        prop_assert_eq!(&o.payload, &payload);
        prop_assert_eq!(o.dst_mac, backend_mac(bi));

        let reply = if udp {
            udp_frame(backend_mac(bi), P1_MAC, backend, client, o.dport, sport, 64, &reply_payload)
        } else {
            tcp_frame(backend_mac(bi), P1_MAC, backend, client, o.dport, sport, SYN | ACK, 9, seq.wrapping_add(1), 64, &reply_payload)
        };
        let (v, out) = run(&mut p, &t, &st, 1, &reply, NOW + 1, false);
        prop_assert_eq!(v, Verdict::Tx(0));
        let r = parse(&out);
        prop_assert_eq!((r.src, r.sport, r.dst, r.dport), (Some(ip4(VIP4)), vport, Some(client), sport));
        prop_assert_eq!(r.dst_mac, cmac);
        prop_assert_eq!(&r.payload, &reply_payload);
    }

    #[test]
    fn ipv6_forward_then_reverse_restores_the_tuple(
        sport in 1u16..=65535,
        udp: bool,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (mut p, t, st) = setup();
        let (f, vport) = if udp {
            (udp_frame(CLIENT_MAC, P0_MAC, ip6(client6()), ip6(vip6()), sport, 53, 64, &payload), 53)
        } else {
            (tcp_frame(CLIENT_MAC, P0_MAC, ip6(client6()), ip6(vip6()), sport, 80, SYN, 1, 0, 64, &payload), 80)
        };
        let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
        prop_assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        let backend = o.dst.unwrap();
        let bi = backend_index(backend);
        let reply = if udp {
            udp_frame(backend_mac(bi), P1_MAC, backend, ip6(client6()), o.dport, sport, 64, &payload)
        } else {
            tcp_frame(backend_mac(bi), P1_MAC, backend, ip6(client6()), o.dport, sport, SYN | ACK, 1, 2, 64, &payload)
        };
        let (v, out) = run(&mut p, &t, &st, 1, &reply, NOW, false);
        prop_assert_eq!(v, Verdict::Tx(0));
        let r = parse(&out);
        prop_assert_eq!((r.src, r.sport, r.dst, r.dport), (Some(ip6(vip6())), vport, Some(ip6(client6())), sport));
    }
}

// ---------------------------------------------------------------------------
// Masquerade (SNAT)

fn masq_table(policy: crate::table::MasqueradePolicy, svc_masq: bool) -> ServiceTable {
    let mut s = spec();
    for sv in &mut s.services {
        sv.masquerade = svc_masq;
    }
    s.masquerade = policy;
    ServiceTable::new(s, 1)
}

/// Backend `bi`'s segment to `dst:dport` (e.g. the node's SNAT address).
fn b_tcp_to(bi: usize, dst: IpAddr, dport: u16, flags: u8) -> Vec<u8> {
    tcp_frame(
        backend_mac(bi),
        P1_MAC,
        ip4(BACKENDS4[bi]),
        dst,
        8080,
        dport,
        flags,
        7000,
        1001,
        64,
        &[],
    )
}

#[test]
fn masqueraded_flow_round_trip() {
    let t = masq_table(Default::default(), true);
    let st = WorkerStats::default();
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    assert!(!p.late_prefetch().snat);
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(40100), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    // Source is the node address of the egress port, port from the SNAT range.
    assert_eq!(o.src, Some(ip4(NODE1)));
    assert!(SNAT_PORTS.contains(&o.sport), "{}", o.sport);
    let bi = backend_index(o.dst.unwrap());
    assert_eq!(stat(&st.sessions_masqueraded), 1);
    // While a session masquerades, the worker's pre-pass prefetches
    // masquerade endpoints (step 3).
    assert!(p.late_prefetch().snat);
    // The backend answers the node; the client gets the VIP's answer.
    let (v, out) = run(
        &mut p,
        &t,
        &st,
        1,
        &b_tcp_to(bi, ip4(NODE1), o.sport, SYN | ACK),
        NOW + 1,
        false,
    );
    assert_eq!(v, Verdict::Tx(0));
    let r = parse(&out);
    assert_eq!((r.src, r.sport), (Some(ip4(VIP4)), 80));
    assert_eq!((r.dst, r.dport), (Some(ip4(CLIENT4)), 40100));
    assert_eq!(r.dst_mac, CLIENT_MAC);
    // The next client packet keeps the same SNAT port.
    let (_, out) = run(
        &mut p,
        &t,
        &st,
        0,
        &c_tcp(ip4(VIP4), 40100, 80, ACK, 1001, 7001),
        NOW + 2,
        false,
    );
    assert_eq!(parse(&out).sport, o.sport);
    // Once it is gone, step 3 no longer looks.
    assert_eq!(p.sessions.expire(u64::MAX, 100), 1);
    assert!(!p.late_prefetch().snat);
}

#[test]
fn masquerade_policy_off_cluster_all_and_hairpin() {
    use crate::table::MasqueradePolicy;
    let st = WorkerStats::default();
    let first_src = |t: &ServiceTable| {
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), t);
        let (v, out) = run(&mut p, t, &st, 0, &c_syn4(40200), NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        parse(&out).src
    };
    // Default: the client's address is preserved.
    assert_eq!(
        first_src(&masq_table(MasqueradePolicy::default(), false)),
        Some(ip4(CLIENT4))
    );
    // masqueradeAll.
    let all = MasqueradePolicy {
        all: true,
        cluster_cidrs: vec![],
    };
    assert_eq!(first_src(&masq_table(all, false)), Some(ip4(NODE1)));
    // The client is outside the cluster CIDR: masqueraded; inside: not.
    let out = MasqueradePolicy {
        all: false,
        cluster_cidrs: vec![(Addr::v4([198, 19, 0, 0]), 16)],
    };
    assert_eq!(first_src(&masq_table(out, false)), Some(ip4(NODE1)));
    let inside = MasqueradePolicy {
        all: false,
        cluster_cidrs: vec![(Addr::v4([198, 18, 0, 0]), 16)],
    };
    assert_eq!(first_src(&masq_table(inside, false)), Some(ip4(CLIENT4)));

    // Hairpin: a backend reaching the VIP and landing on itself is
    // masqueraded, and so is one landing on another pod of its link.
    let t = masq_table(MasqueradePolicy::default(), false);
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let mut hairpins = 0;
    for sport in 41000..41060u16 {
        let f = tcp_frame(
            backend_mac(0),
            P1_MAC,
            ip4(BACKENDS4[0]),
            ip4(VIP4),
            sport,
            80,
            SYN,
            1,
            0,
            64,
            &[],
        );
        let (v, out) = run(&mut p, &t, &st, 1, &f, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        if o.dst == Some(ip4(BACKENDS4[0])) {
            hairpins += 1;
        }
        // Hairpin, and pod to a pod on the same link: the reply would not
        // come back through the dataplane, so both are masqueraded.
        assert_eq!(o.src, Some(ip4(NODE1)));
    }
    assert!(hairpins > 5, "{hairpins}");
}

#[test]
fn masqueraded_replies_go_to_the_snat_port_owner() {
    let t = masq_table(Default::default(), true);
    let st = WorkerStats::default();
    let mut w = [
        pipeline_with(0, 2, PipelineConfig::default(), &t),
        pipeline_with(1, 2, PipelineConfig::default(), &t),
    ];
    for sport in 42000..42040u16 {
        let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
        let (v, _) = run(&mut w[1 - owner], &t, &st, 0, &c_syn4(sport), NOW, false);
        assert_eq!(v, Verdict::HandOff(owner as u16));
        let (v, out) = run(&mut w[owner], &t, &st, 0, &c_syn4(sport), NOW, true);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        // The SNAT port lies in the owner's partition ...
        assert_eq!(snat_owner(o.sport, 2) as usize, owner);
        let (first, len) = snat_range(owner as u16, 2);
        assert!((first as usize..first as usize + len).contains(&(o.sport as usize)));
        // ... so the reply, arriving anywhere, is steered back to it.
        let bi = backend_index(o.dst.unwrap());
        let reply = b_tcp_to(bi, ip4(NODE1), o.sport, SYN | ACK);
        let (v, _) = run(&mut w[1 - owner], &t, &st, 1, &reply, NOW, false);
        assert_eq!(v, Verdict::HandOff(owner as u16));
        let (v, out) = run(&mut w[owner], &t, &st, 1, &reply, NOW, true);
        assert_eq!(v, Verdict::Tx(0));
        assert_eq!(parse(&out).dport, sport);
    }
}

#[test]
fn snat_partitions_cover_the_range_without_overlap() {
    for n in 1..=8u16 {
        let mut last_end = *SNAT_PORTS.start() as usize;
        for id in 0..n {
            let (first, len) = snat_range(id, n);
            assert_eq!(first as usize, last_end);
            assert!(len > 1000);
            assert_eq!(snat_owner(first, n), id);
            assert_eq!(snat_owner((first as usize + len - 1) as u16, n), id);
            last_end = first as usize + len;
        }
        assert!(last_end <= *SNAT_PORTS.end() as usize + 1);
    }
}

#[test]
fn snat_exhaustion_is_counted_never_reusing_a_live_tuple() {
    // One backend and a masqueraded Service: every flow needs its own port
    // of the partition (the reply tuple is backend -> node:port).
    let mut s = spec();
    s.services = vec![ServiceSpec {
        source_ranges: vec![],
        affinity_timeout: None,
        masquerade: true,
        external: false,
        no_backends: NoBackends::Reject,
        short_circuit: vec![],
        algorithm: Default::default(),
        name: "one".into(),
        frontend: Frontend {
            addr: sa(ip4(VIP4), 80),
            proto: Proto::Tcp,
        },
        backends: vec![sa(ip4(BACKENDS4[0]), 8080)],
    }];
    let t = ServiceTable::new(s, 1);
    let st = WorkerStats::default();
    let mut p = pipeline_with(
        0,
        1,
        PipelineConfig {
            sessions: 1 << 17,
            ..Default::default()
        },
        &t,
    );
    let (_, len) = snat_range(0, 1);
    let mut ports = std::collections::HashSet::new();
    let mut drops = 0;
    for i in 0..(len as u32 + 2000) {
        let f = tcp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(VIP4),
            1024 + i as u16,
            80,
            SYN,
            1,
            0,
            64,
            &[],
        );
        let mut b = VecBuf::new(&f);
        match p.process(&t, &st, 0, &mut b, NOW, false) {
            Verdict::Tx(1) => {
                let o = parse(b.data());
                assert!(
                    ports.insert(o.sport),
                    "SNAT port {} reused while live",
                    o.sport
                );
            }
            Verdict::Drop(DropReason::SnatExhausted) => drops += 1,
            v => panic!("{v:?}"),
        }
    }
    assert!(drops > 0, "exhaustion must be reached and counted");
    assert!(ports.len() <= len);
}

// ---------------------------------------------------------------------------
// sessionAffinity: ClientIP

fn affinity_spec(backends: usize, timeout: u32) -> TableSpec {
    let mut s = spec();
    s.services = vec![ServiceSpec {
        source_ranges: vec![],
        affinity_timeout: Some(timeout),
        masquerade: false,
        external: false,
        no_backends: NoBackends::Reject,
        short_circuit: vec![],
        algorithm: Default::default(),
        name: "aff".into(),
        frontend: Frontend {
            addr: sa(ip4(VIP4), 80),
            proto: Proto::Tcp,
        },
        backends: (0..backends)
            .map(|i| sa(ip4([198, 18, 1, 11 + i as u8]), 8080))
            .collect(),
    }];
    for i in 3..backends {
        s.neighbors.push(StaticNeighbor {
            addr: Addr::v4([198, 18, 1, 11 + i as u8]),
            mac: MacAddr(backend_mac(i)),
            port: 1,
        });
    }
    s
}

fn first_dst(p: &mut Pipeline, t: &ServiceTable, st: &WorkerStats, sport: u16, now: u64) -> IpAddr {
    let (v, out) = run(p, t, st, 0, &c_syn4(sport), now, true);
    assert_eq!(v, Verdict::Tx(1));
    parse(&out).dst.unwrap()
}

#[test]
fn client_ip_affinity_is_the_same_on_every_worker() {
    let t = ServiceTable::new(affinity_spec(3, 60), 1);
    let st = WorkerStats::default();
    let shared = Arc::new(crate::affinity::AffinityTable::new(1024));
    let mut w: Vec<Pipeline> = (0..2)
        .map(|id| {
            let mut p = pipeline_with(id, 2, PipelineConfig::default(), &t);
            p.set_affinity(shared.clone());
            p
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for sport in 43000..43100u16 {
        let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
        seen.insert(first_dst(&mut w[owner], &t, &st, sport, NOW));
    }
    assert_eq!(seen.len(), 1, "one client IP, one backend: {seen:?}");
    // Without affinity the same connections spread.
    let (mut p, t2, st2) = setup();
    let spread: std::collections::HashSet<_> = (43000..43100u16)
        .map(|s| first_dst(&mut p, &t2, &st2, s, NOW))
        .collect();
    assert_eq!(spread.len(), 3);
}

#[test]
fn new_connections_follow_the_services_algorithm_and_affinity_wins() {
    use crate::table::Algorithm;
    let with = |algorithm, timeout: Option<u32>| {
        let mut s = affinity_spec(3, 60);
        s.services[0].algorithm = algorithm;
        s.services[0].affinity_timeout = timeout;
        ServiceTable::new(s, 1)
    };
    let st = WorkerStats::default();
    // Round-robin over two workers: one rotation, whichever worker owns the
    // client port: three consecutive connections reach three backends.
    let t = with(Algorithm::RoundRobin, None);
    let mut w: Vec<Pipeline> = (0..2)
        .map(|id| pipeline_with(id, 2, PipelineConfig::default(), &t))
        .collect();
    let mut counts = std::collections::HashMap::new();
    for sport in 44000..44300u16 {
        let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
        *counts
            .entry(first_dst(&mut w[owner], &t, &st, sport, NOW))
            .or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    // Source hash: one client, one backend, on both workers.
    let t = with(Algorithm::SourceHash, None);
    let mut w: Vec<Pipeline> = (0..2)
        .map(|id| pipeline_with(id, 2, PipelineConfig::default(), &t))
        .collect();
    let seen: std::collections::HashSet<_> = (45000..45100u16)
        .map(|sport| {
            let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
            first_dst(&mut w[owner], &t, &st, sport, NOW)
        })
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // ClientIP affinity takes precedence over round-robin and random.
    for a in [Algorithm::RoundRobin, Algorithm::Random] {
        let t = with(a, Some(60));
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let seen: std::collections::HashSet<_> = (46000..46050u16)
            .map(|sport| first_dst(&mut p, &t, &st, sport, NOW))
            .collect();
        assert_eq!(seen.len(), 1, "{a:?}: {seen:?}");
    }
    // Random without affinity reaches every backend.
    let t = with(Algorithm::Random, None);
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let seen: std::collections::HashSet<_> = (47000..47100u16)
        .map(|sport| first_dst(&mut p, &t, &st, sport, NOW))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn client_ip_affinity_survives_table_changes_until_timeout_or_removal() {
    let timeout = 30u32;
    let t1 = ServiceTable::new(affinity_spec(3, timeout), 1);
    let st = WorkerStats::default();
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t1);
    let b = first_dst(&mut p, &t1, &st, 44000, NOW);
    // More backends: the remembered choice wins while it is fresh ...
    let t2 = ServiceTable::new(affinity_spec(12, timeout), 2);
    p.on_table(&t2);
    for (i, sport) in (44001..44020u16).enumerate() {
        assert_eq!(first_dst(&mut p, &t2, &st, sport, NOW + 1000 * i as u64), b);
    }
    // ... and each new connection refreshes it; after `timeout` idle seconds
    // the choice is the fresh Maglev pick over the client IP.
    let later = NOW + 19_000 + u64::from(timeout) * 1000;
    let expected = t2.services()[0]
        .pick(crate::affinity::client_hash(&Addr::v4(CLIENT4)))
        .unwrap();
    assert_eq!(
        first_dst(&mut p, &t2, &st, 44100, later),
        expected.addr.ip()
    );
    // A removed backend is never used from memory.
    let mut s3 = affinity_spec(12, timeout);
    let chosen = expected;
    s3.services[0].backends.retain(|x| *x != chosen);
    let t3 = ServiceTable::new(s3, 3);
    p.on_table(&t3);
    let d = first_dst(&mut p, &t3, &st, 44101, later + 1000);
    assert_ne!(d, chosen.addr.ip());
}

#[test]
fn the_packet_path_never_allocates() {
    let (mut p, t, st) = setup();
    // Frames and buffers are built before counting.
    let syns: Vec<Vec<u8>> = (45000..45200u16).map(c_syn4).collect();
    let (v, out) = run(&mut p, &t, &st, 0, &syns[0], NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let bi = backend_index(o.dst.unwrap());
    let reply = b_tcp(bi, o.dst.unwrap(), 8080, 45000, SYN | ACK, 1, 1001);
    let data = c_tcp(ip4(VIP4), 45000, 80, ACK, 1001, 2);
    let reject = c_tcp(ip4(EMPTY4), 45000, 80, SYN, 1, 0);
    let udp_reject = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(EMPTY4),
        45000,
        53,
        64,
        b"x",
    );
    let arp = arp_frame(1, [0xff; 6], CLIENT_MAC, CLIENT4, [0; 6], NODE0);
    // SCTP: new associations (CRC check + recompute), one continued, a reject.
    let sctp_inits: Vec<Vec<u8>> = (45000..45050u16)
        .map(|p| sctp_flows::c_sctp(ip4(VIP4), p, 0, &[(1, &[1; 16])]))
        .collect();
    let sctp_data = sctp_flows::c_sctp(ip4(VIP4), 45000, 1, &[(0, &[2; 100])]);
    let sctp_reject = sctp_flows::c_sctp(ip4(EMPTY4), 45000, 0, &[(1, &[1; 16])]);
    let mut buf = VecBuf::new(&[0u8; 1600]);
    let (n, _) = crate::dpdk::alloc_count::allocations(|| {
        for f in syns
            .iter()
            .skip(1)
            .chain([&data, &reject, &udp_reject, &arp])
            .chain(sctp_inits.iter())
            .chain([&sctp_data, &sctp_reject])
        {
            for _ in 0..3 {
                buf.reset(f);
                let v = p.process(&t, &st, 0, &mut buf, NOW, false);
                assert!(!matches!(v, Verdict::Drop(_)), "{v:?}");
            }
        }
        buf.reset(&reply);
        p.process(&t, &st, 1, &mut buf, NOW, false);
        p.sessions.expire(u64::MAX, 1000)
    });
    assert_eq!(n, 0, "Pipeline::process allocated");
}

#[test]
fn load_balancer_source_ranges_drop_other_clients() {
    let mut s = spec();
    for sv in &mut s.services {
        sv.source_ranges = vec![(Addr::v4([198, 19, 0, 0]), 16)];
    }
    let t = ServiceTable::new(s, 1);
    let st = WorkerStats::default();
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(46000), NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::SourceRange));
    assert!(p.sessions.is_empty());
    let mut s = spec();
    for sv in &mut s.services {
        sv.source_ranges = vec![(Addr::v4([198, 18, 0, 0]), 24)];
    }
    let t = ServiceTable::new(s, 1);
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(46000), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
}

// ---------------------------------------------------------------------------
// ICMP errors about translated flows

/// An ICMPv4 error from `src` to `dst` quoting `quoted` (an IP packet).
#[allow(clippy::too_many_arguments)]
fn icmp4_error(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src, dst, 64)
        .icmpv4_raw(ty, code, rest);
    let mut v = Vec::new();
    b.write(&mut v, quoted).unwrap();
    v
}

/// (src, dst, sport, dport) of the packet quoted in an ICMP message, and
/// whether its IPv4 header checksum is valid.
fn quoted4(msg: &[u8]) -> ([u8; 4], [u8; 4], u16, u16, bool) {
    let q = &msg[8..];
    let hl = (q[0] & 0x0f) as usize * 4;
    let ok = crate::packet::checksum::ipv4_header(&q[..hl]) == u16::from_be_bytes([q[10], q[11]]);
    (
        q[12..16].try_into().unwrap(),
        q[16..20].try_into().unwrap(),
        u16::from_be_bytes([q[hl], q[hl + 1]]),
        u16::from_be_bytes([q[hl + 2], q[hl + 3]]),
        ok,
    )
}

#[test]
fn backend_port_unreachable_reaches_the_client_translated() {
    let (mut p, t, st) = setup();
    let req = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        47000,
        53,
        64,
        b"hello",
    );
    let (v, out) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let bi = backend_index(parse(&out).dst.unwrap());
    // The backend's kernel answers with port unreachable, quoting what it got.
    let err = icmp4_error(
        backend_mac(bi),
        P1_MAC,
        BACKENDS4[bi],
        CLIENT4,
        3,
        3,
        [0; 4],
        &out[14..],
    );
    let (v, out) = run(&mut p, &t, &st, 1, &err, NOW + 1, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out); // verifies the outer IPv4 and ICMP checksums
    assert_eq!(o.src, Some(ip4(VIP4)), "outer source is the VIP");
    assert_eq!(o.dst, Some(ip4(CLIENT4)));
    assert_eq!(o.icmp, Some((3, 3)));
    let (s, d, sp, dp, ok) = quoted4(&o.icmp_msg);
    assert_eq!(
        (s, d, sp, dp),
        (CLIENT4, VIP4, 47000, 53),
        "the client sees its own packet quoted"
    );
    assert!(ok, "quoted IPv4 header checksum");
    // The quoted UDP checksum still verifies (whole datagram is quoted here).
    let q = &o.icmp_msg[8 + 20..];
    assert!(crate::packet::checksum::verify_l4_v4(CLIENT4, VIP4, 17, q));
    assert_eq!(stat(&st.icmp_errors_translated), 1);
}

#[test]
fn frag_needed_towards_the_vip_reaches_the_backend_translated() {
    let (mut p, t, st) = setup();
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(47100), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let backend = parse(&out).dst.unwrap();
    let bi = backend_index(backend);
    let synack = b_tcp(bi, backend, 8080, 47100, SYN | ACK, 5000, 1001);
    let (v, reply) = run(&mut p, &t, &st, 1, &synack, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    // A router on the client's side cannot forward our (VIP -> client)
    // packet: fragmentation needed, MTU 1280, sent to the VIP. Only the
    // first 28 bytes of the packet are quoted.
    let router = [198, 18, 0, 254];
    let err = icmp4_error(
        CLIENT_MAC,
        P0_MAC,
        router,
        VIP4,
        3,
        4,
        [0, 0, 0x05, 0x00],
        &reply[14..14 + 28],
    );
    let (v, out) = run(&mut p, &t, &st, 0, &err, NOW + 1, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    assert_eq!(o.src, Some(ip4(router)));
    assert_eq!(o.dst, Some(backend), "delivered to the backend");
    assert_eq!(o.icmp, Some((3, 4)));
    assert_eq!(&o.icmp_msg[4..8], &[0, 0, 5, 0], "the MTU is kept");
    let (s, d, sp, dp, ok) = quoted4(&o.icmp_msg);
    assert_eq!(
        (ip4(s), d, sp, dp),
        (backend, CLIENT4, 8080, 47100),
        "the backend sees its own packet quoted"
    );
    assert!(ok);
}

#[test]
fn icmp_errors_are_steered_to_the_flow_owner_and_unknown_ones_routed() {
    let (_, t, st) = setup();
    let mut w = [
        pipeline_with(0, 2, PipelineConfig::default(), &t),
        pipeline_with(1, 2, PipelineConfig::default(), &t),
    ];
    let sport = 47200;
    let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
    let req = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(VIP4),
        sport,
        53,
        64,
        b"x",
    );
    let (v, out) = run(&mut w[owner], &t, &st, 0, &req, NOW, true);
    assert_eq!(v, Verdict::Tx(1));
    let bi = backend_index(parse(&out).dst.unwrap());
    let err = icmp4_error(
        backend_mac(bi),
        P1_MAC,
        BACKENDS4[bi],
        CLIENT4,
        3,
        3,
        [0; 4],
        &out[14..],
    );
    let (v, _) = run(&mut w[1 - owner], &t, &st, 1, &err, NOW, false);
    assert_eq!(v, Verdict::HandOff(owner as u16));
    let (v, _) = run(&mut w[owner], &t, &st, 1, &err, NOW, true);
    assert_eq!(v, Verdict::Tx(0));
    // An error about a flow we never saw is just routed.
    let stray = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(BACKENDS4[0]),
        1,
        2,
        64,
        b"x",
    );
    let err = icmp4_error(
        backend_mac(0),
        P1_MAC,
        BACKENDS4[0],
        CLIENT4,
        3,
        3,
        [0; 4],
        &stray[14..],
    );
    let (v, out) = run(&mut w[owner], &t, &st, 1, &err, NOW, true);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(parse(&out).src, Some(ip4(BACKENDS4[0])), "untranslated");
}

#[test]
fn reply_tuple_clash_is_resolved_by_remapping_the_client_port() {
    // Two frontends with the same single backend: the same client port to
    // both gives the same reply tuple (backend -> client:port).
    let mut s = spec();
    let b = vec![sa(ip4(BACKENDS4[0]), 8080)];
    s.services = vec![
        svc("a", ip4(VIP4), 80, Proto::Tcp, b.clone()),
        svc("b", ip4([198, 18, 100, 9]), 80, Proto::Tcp, b),
    ];
    let t = ServiceTable::new(s, 1);
    // Worker 1 of 2, with a client port it owns.
    let port = (40000..)
        .find(|p| owner_of(&sa(ip4(CLIENT4), *p), 2) == 1)
        .unwrap();
    let st = WorkerStats::default();
    let mut p = pipeline_with(1, 2, PipelineConfig::default(), &t);
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(port), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(parse(&out).src, Some(ip4(CLIENT4)));
    let (v, out) = run(
        &mut p,
        &t,
        &st,
        0,
        &c_tcp(ip4([198, 18, 100, 9]), port, 80, SYN, 1, 0),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(1), "the second flow is not dropped");
    let o = parse(&out);
    assert_eq!(o.src, Some(ip4(CLIENT4)), "the client address is kept");
    assert_ne!(o.sport, port, "... with another port");
    assert_eq!(
        owner_of(&sa(ip4(CLIENT4), o.sport), 2),
        1,
        "replies come here"
    );
    assert_eq!(stat(&st.sessions_clash_remapped), 1);
    assert_eq!(stat(&st.sessions_masqueraded), 0);
    // Its reply finds its way back to the client from the second VIP.
    let (v, out) = run(
        &mut p,
        &t,
        &st,
        1,
        &b_tcp_to(0, ip4(CLIENT4), o.sport, SYN | ACK),
        NOW,
        false,
    );
    assert_eq!(v, Verdict::Tx(0));
    let r = parse(&out);
    assert_eq!(
        (r.src, r.sport, r.dport),
        (Some(ip4([198, 18, 100, 9])), 80, port)
    );
}

// ---------------------------------------------------------------------------
// MTU: ICMP fragmentation needed / packet too big

#[test]
fn oversized_reply_gets_frag_needed_quoting_the_original_packet() {
    let t = table();
    let st = WorkerStats::default();
    let mut ports = ports();
    ports[0].mtu = 1280; // the client side
    let mut p = Pipeline::new(0, 1, ports, PipelineConfig::default());
    p.on_table(&t);
    let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(49000), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let backend = parse(&out).dst.unwrap();
    let bi = backend_index(backend);
    // A 1400-byte data segment from the backend (DF set by etherparse).
    let big = tcp_frame(
        backend_mac(bi),
        P1_MAC,
        backend,
        ip4(CLIENT4),
        8080,
        49000,
        ACK,
        1,
        1001,
        64,
        &[7u8; 1360],
    );
    let (v, out) = run(&mut p, &t, &st, 1, &big, NOW, false);
    assert_eq!(v, Verdict::Tx(1), "the error goes back to the backend");
    let o = parse(&out);
    assert_eq!(o.src, Some(ip4(NODE1)));
    assert_eq!(o.dst, Some(backend));
    assert_eq!(o.dst_mac, backend_mac(bi));
    assert_eq!(o.icmp, Some((3, 4)));
    assert_eq!(
        u16::from_be_bytes([o.icmp_msg[6], o.icmp_msg[7]]),
        1280,
        "next-hop MTU"
    );
    let (s, d, sp, dp, ok) = quoted4(&o.icmp_msg);
    assert_eq!(
        (ip4(s), d, sp, dp),
        (backend, CLIENT4, 8080, 49000),
        "quotes the packet as sent"
    );
    assert!(ok);
    assert!(o.ip_total_len <= 576);
    // A packet that fits still goes through.
    let fits = tcp_frame(
        backend_mac(bi),
        P1_MAC,
        backend,
        ip4(CLIENT4),
        8080,
        49000,
        ACK,
        1,
        1001,
        64,
        &[7u8; 1200],
    );
    let (v, _) = run(&mut p, &t, &st, 1, &fits, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    // Without DF we do not fragment: dropped and counted.
    let mut nodf = big.clone();
    nodf[14 + 6] &= !0x40;
    fix_ip4_csum(&mut nodf);
    let (v, _) = run(&mut p, &t, &st, 1, &nodf, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::TooBig));
}

#[test]
fn oversized_ipv6_gets_packet_too_big() {
    let t = table();
    let st = WorkerStats::default();
    let mut ports = ports();
    ports[1].mtu = 1280; // the backend side
    let mut p = Pipeline::new(0, 1, ports, PipelineConfig::default());
    p.on_table(&t);
    let big = tcp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(vip6()),
        49100,
        80,
        ACK,
        1,
        1,
        64,
        &[1u8; 1300],
    );
    let (v, out) = run(&mut p, &t, &st, 0, &big, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let o = parse(&out); // verifies the ICMPv6 checksum
    assert_eq!(o.src, Some(ip6(node6_0())));
    assert_eq!(o.dst, Some(ip6(client6())));
    assert_eq!(o.icmp, Some((2, 0)));
    assert_eq!(
        u32::from_be_bytes(o.icmp_msg[4..8].try_into().unwrap()),
        1280
    );
    assert!(o.ip_total_len <= 1280);
    assert!(
        p.sessions.is_empty(),
        "no session for a packet that was not forwarded"
    );
}

// ---------------------------------------------------------------------------
// REJECT vs DROP, external frontends and the masquerade rules

#[test]
fn empty_local_policy_frontend_drops_instead_of_rejecting() {
    let mut s = spec();
    for sv in &mut s.services {
        if sv.backends.is_empty() {
            sv.no_backends = NoBackends::Drop;
        }
    }
    let t = ServiceTable::new(s, 1);
    let st = WorkerStats::default();
    let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
    let tcp4 = c_tcp(ip4(EMPTY4), 40100, 80, SYN, 1, 0);
    let tcp6 = c_tcp(ip6(empty6()), 40101, 80, SYN, 1, 0);
    let udp6 = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip6(client6()),
        ip6(empty6()),
        40102,
        53,
        64,
        b"x",
    );
    for f in [&tcp4, &tcp6, &udp6] {
        let (v, _) = run(&mut p, &t, &st, 0, f, NOW, false);
        assert_eq!(v, Verdict::Drop(DropReason::NoLocalEndpoints));
    }
    assert_eq!(stat(&st.rejected), 0);
    assert_eq!(p.sessions.len(), 0);
    // Frontends with backends are unaffected.
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(40103), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
}

#[test]
fn external_frontends_skip_masquerade_all_and_off_cluster_rules() {
    use crate::table::MasqueradePolicy;
    let st = WorkerStats::default();
    let first_src = |policy: MasqueradePolicy, external: bool| {
        let mut s = spec();
        s.masquerade = policy;
        for sv in &mut s.services {
            sv.external = external;
        }
        let t = ServiceTable::new(s, 1);
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(40300), NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        parse(&out).src
    };
    let all = MasqueradePolicy {
        all: true,
        cluster_cidrs: vec![],
    };
    let off_cluster = MasqueradePolicy {
        all: false,
        cluster_cidrs: vec![(Addr::v4([198, 19, 0, 0]), 16)],
    };
    for policy in [all, off_cluster] {
        assert_eq!(first_src(policy.clone(), false), Some(ip4(NODE1)));
        assert_eq!(first_src(policy, true), Some(ip4(CLIENT4)));
    }
}

#[test]
fn short_circuit_serves_in_cluster_clients_only() {
    use crate::table::MasqueradePolicy;
    let st = WorkerStats::default();
    let landings = |cluster_cidrs: Vec<(Addr, u8)>| {
        let mut s = spec();
        s.masquerade = MasqueradePolicy {
            all: false,
            cluster_cidrs,
        };
        let web = &mut s.services[0];
        web.external = true;
        web.backends = vec![sa(ip4(BACKENDS4[0]), 8080)];
        web.short_circuit = BACKENDS4[1..].iter().map(|b| sa(ip4(*b), 8080)).collect();
        let t = ServiceTable::new(s, 1);
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let mut seen = std::collections::BTreeSet::new();
        for sport in 40400..40464u16 {
            let (v, out) = run(&mut p, &t, &st, 0, &c_syn4(sport), NOW, false);
            assert_eq!(v, Verdict::Tx(1));
            let o = parse(&out);
            assert_eq!(o.src, Some(ip4(CLIENT4)), "not masqueraded");
            seen.insert(backend_index(o.dst.unwrap()));
        }
        seen.into_iter().collect::<Vec<_>>()
    };
    // The client is in the cluster CIDRs: the short-circuit set.
    assert_eq!(landings(vec![(Addr::v4([198, 18, 0, 0]), 24)]), [1, 2]);
    // Outside them: the frontend's own backends.
    assert_eq!(landings(vec![(Addr::v4([198, 19, 0, 0]), 16)]), [0]);
}

// ---------------------------------------------------------------------------
// SCTP
//
// Frames are built here with the CRC32c of the `crc` crate (CRC-32/ISCSI, an
// independent implementation), and every SCTP packet the pipeline emits is
// checked against it.

mod sctp_flows {
    use super::*;
    use crate::packet::sctp::{bits, chunk};
    use crate::session::SctpState;
    use etherparse::IpNumber;

    /// The oracle: CRC32c of an SCTP packet with its checksum field zeroed.
    fn oracle_crc(pkt: &[u8]) -> u32 {
        let mut z = pkt.to_vec();
        z[8..12].fill(0);
        crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&z)
    }

    /// An SCTP packet: common header, the chunks (padded), CRC32c by the oracle.
    pub(super) fn sctp_pkt(sport: u16, dport: u16, vtag: u32, chunks: &[(u8, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&vtag.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        for (ty, value) in chunks {
            v.extend_from_slice(&[*ty, 0]);
            v.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
            v.extend_from_slice(value);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        let c = oracle_crc(&v);
        v[8..12].copy_from_slice(&c.to_le_bytes());
        v
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn sctp_frame(
        smac: [u8; 6],
        dmac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        vtag: u32,
        chunks: &[(u8, &[u8])],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        ip_step(smac, dmac, src, dst, 64)
            .write(&mut v, IpNumber(132), &sctp_pkt(sport, dport, vtag, chunks))
            .unwrap();
        v
    }

    /// INIT value: initiate tag, a_rwnd, streams, initial TSN.
    fn init_value(tag: u32) -> Vec<u8> {
        let mut v = tag.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1]);
        v
    }

    fn client(v6: bool) -> IpAddr {
        if v6 {
            ip6(client6())
        } else {
            ip4(CLIENT4)
        }
    }

    fn vip(v6: bool) -> IpAddr {
        if v6 {
            ip6(vip6())
        } else {
            ip4(VIP4)
        }
    }

    /// Client (port 0) SCTP packet to `dst:80`.
    pub(super) fn c_sctp(dst: IpAddr, sport: u16, vtag: u32, chunks: &[(u8, &[u8])]) -> Vec<u8> {
        let src = if dst.is_ipv4() {
            ip4(CLIENT4)
        } else {
            ip6(client6())
        };
        sctp_frame(CLIENT_MAC, P0_MAC, src, dst, sport, 80, vtag, chunks)
    }

    #[derive(Debug)]
    pub(super) struct SctpOut {
        pub dst_mac: [u8; 6],
        pub src: IpAddr,
        pub dst: IpAddr,
        pub ttl: u8,
        pub sport: u16,
        pub dport: u16,
        pub vtag: u32,
        pub crc: [u8; 4],
        pub chunks: Vec<(u8, Vec<u8>)>,
    }

    /// Parses an emitted SCTP frame (IP layer by etherparse, which also
    /// checks the IPv4 header checksum) and asserts its CRC32c with the oracle.
    pub(super) fn parse_sctp(frame: &[u8]) -> SctpOut {
        let p = SlicedPacket::from_ethernet(frame).expect("etherparse rejects output");
        let Some(LinkSlice::Ethernet2(e)) = &p.link else {
            panic!("no ethernet")
        };
        let dst_mac = e.destination();
        let (src, dst, ttl, payload) = match p.net.as_ref().expect("no IP") {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert_eq!(
                    h.header_checksum(),
                    h.to_header().calc_header_checksum(),
                    "IPv4 header checksum"
                );
                assert_eq!(ip.payload().ip_number, IpNumber(132));
                (
                    ip4(h.source()),
                    ip4(h.destination()),
                    h.ttl(),
                    ip.payload().payload,
                )
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                assert_eq!(ip.payload().ip_number, IpNumber(132));
                (
                    ip6(h.source_addr()),
                    ip6(h.destination_addr()),
                    h.hop_limit(),
                    ip.payload().payload,
                )
            }
        };
        let crc: [u8; 4] = payload[8..12].try_into().unwrap();
        assert_eq!(
            crc,
            oracle_crc(payload).to_le_bytes(),
            "SCTP CRC32c (oracle) of {payload:02x?}"
        );
        let mut chunks = vec![];
        let mut off = 12;
        while off + 4 <= payload.len() {
            let len = u16::from_be_bytes([payload[off + 2], payload[off + 3]]) as usize;
            chunks.push((payload[off], payload[off + 4..off + len].to_vec()));
            off += (len + 3) & !3;
        }
        SctpOut {
            dst_mac,
            src,
            dst,
            ttl,
            sport: u16::from_be_bytes([payload[0], payload[1]]),
            dport: u16::from_be_bytes([payload[2], payload[3]]),
            vtag: u32::from_be_bytes(payload[4..8].try_into().unwrap()),
            crc,
            chunks,
        }
    }

    fn state(p: &Pipeline) -> (SctpState, u64) {
        let s = p.sessions.iter().next().expect("a session");
        (s.sctp, s.expires)
    }

    /// A whole association through the proxy: INIT, INIT ACK, COOKIE ECHO,
    /// COOKIE ACK, DATA both ways, SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE.
    fn association(v6: bool) {
        let (mut p, t, st) = setup();
        let to = Timeouts::default();
        let sport = 40000;
        let init = c_sctp(
            vip(v6),
            sport,
            0,
            &[(chunk::INIT, &init_value(0x1122_3344))],
        );
        let (v, out) = run(&mut p, &t, &st, 0, &init, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse_sctp(&out);
        let backend = o.dst;
        let bi = backend_index(backend);
        assert_eq!((o.src, o.sport, o.dport), (client(v6), sport, 9999));
        assert_eq!(o.dst_mac, backend_mac(bi));
        assert_eq!(o.ttl, 63);
        assert_eq!(o.vtag, 0);
        assert_eq!(o.chunks, [(chunk::INIT, init_value(0x1122_3344))]);
        // The port changed: so did the CRC (recomputed, not carried over).
        let l4 = if v6 { 14 + 40 } else { 14 + 20 };
        assert_ne!(o.crc, init[l4 + 8..l4 + 12]);
        assert_eq!(state(&p), (SctpState::CookieWait, NOW + to.sctp_init));

        // INIT ACK from the backend: reverse NAT to VIP:80, tag kept.
        let init_ack = sctp_frame(
            backend_mac(bi),
            P1_MAC,
            backend,
            client(v6),
            9999,
            sport,
            0x1122_3344,
            &[(chunk::INIT_ACK, &init_value(0x5566_7788))],
        );
        let (v, out) = run(&mut p, &t, &st, 1, &init_ack, NOW + 1, false);
        assert_eq!(v, Verdict::Tx(0));
        let r = parse_sctp(&out);
        assert_eq!((r.src, r.sport), (vip(v6), 80));
        assert_eq!((r.dst, r.dport), (client(v6), sport));
        assert_eq!(r.dst_mac, CLIENT_MAC);
        assert_eq!(r.vtag, 0x1122_3344);
        assert_eq!(r.chunks[0].0, chunk::INIT_ACK);

        let steps: [(bool, u8, SctpState, u64); 6] = [
            (
                true,
                chunk::COOKIE_ECHO,
                SctpState::CookieEchoed,
                to.sctp_init,
            ),
            (
                false,
                chunk::COOKIE_ACK,
                SctpState::Established,
                to.sctp_established,
            ),
            (
                true,
                chunk::DATA,
                SctpState::Established,
                to.sctp_established,
            ),
            (true, chunk::SHUTDOWN, SctpState::Closing, to.sctp_closing),
            (
                false,
                chunk::SHUTDOWN_ACK,
                SctpState::Closing,
                to.sctp_closing,
            ),
            (
                true,
                chunk::SHUTDOWN_COMPLETE,
                SctpState::Closed,
                to.sctp_closed,
            ),
        ];
        for (i, (from_client, ty, want, timeout)) in steps.into_iter().enumerate() {
            let now = NOW + 2 + i as u64;
            let value = b"payload-or-cookie";
            let (port, f) = if from_client {
                (0, c_sctp(vip(v6), sport, 0x5566_7788, &[(ty, &value[..])]))
            } else {
                (
                    1,
                    sctp_frame(
                        backend_mac(bi),
                        P1_MAC,
                        backend,
                        client(v6),
                        9999,
                        sport,
                        0x1122_3344,
                        &[(ty, &value[..])],
                    ),
                )
            };
            let (v, out) = run(&mut p, &t, &st, port, &f, now, false);
            let o = parse_sctp(&out);
            if from_client {
                assert_eq!(v, Verdict::Tx(1), "chunk {ty}");
                assert_eq!((o.dst, o.dport, o.sport), (backend, 9999, sport));
            } else {
                assert_eq!(v, Verdict::Tx(0), "chunk {ty}");
                assert_eq!((o.src, o.sport, o.dport), (vip(v6), 80, sport));
            }
            assert_eq!(o.chunks, [(ty, value.to_vec())]);
            assert_eq!(state(&p), (want, now + timeout), "after chunk {ty}");
        }
        assert_eq!(stat(&st.sessions_created), 1);
        assert_eq!(st.total_drops(), 0);

        // A new association on the closed tuple starts a fresh session.
        let again = c_sctp(vip(v6), sport, 0, &[(chunk::INIT, &init_value(9))]);
        let (v, _) = run(&mut p, &t, &st, 0, &again, NOW + 100, false);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(stat(&st.sessions_created), 2);
        assert_eq!(p.sessions.len(), 1);
        assert_eq!(state(&p), (SctpState::CookieWait, NOW + 100 + to.sctp_init));
    }

    #[test]
    fn sctp_association_is_natted_with_valid_crc32c() {
        association(false);
    }

    #[test]
    fn ipv6_sctp_association_is_natted_with_valid_crc32c() {
        association(true);
    }

    #[test]
    fn sctp_and_tcp_on_one_vip_port_are_distinct_services() {
        let (mut p, t, st) = setup();
        let (_, out) = run(&mut p, &t, &st, 0, &c_syn4(40010), NOW, false);
        assert_eq!(parse(&out).dport, 8080);
        let init = c_sctp(ip4(VIP4), 40010, 0, &[(chunk::INIT, &init_value(1))]);
        let (_, out) = run(&mut p, &t, &st, 0, &init, NOW, false);
        assert_eq!(parse_sctp(&out).dport, 9999);
        assert_eq!(p.sessions.len(), 2);
    }

    #[test]
    fn sctp_address_only_rewrite_keeps_the_crc() {
        // Backend port == Service port: only addresses change, and SCTP has
        // no pseudo-header, so the CRC bytes pass unchanged (and stay valid).
        let mut s = spec();
        s.services = vec![svc(
            "default/same:sctp",
            ip4(VIP4),
            80,
            Proto::Sctp,
            vec![sa(ip4(BACKENDS4[0]), 80)],
        )];
        let t = ServiceTable::new(s, 1);
        let st = WorkerStats::default();
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let init = c_sctp(ip4(VIP4), 40020, 0, &[(chunk::INIT, &init_value(3))]);
        let (v, out) = run(&mut p, &t, &st, 0, &init, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse_sctp(&out);
        assert_eq!((o.dst, o.dport), (ip4(BACKENDS4[0]), 80));
        assert_eq!(o.crc, init[14 + 20 + 8..14 + 20 + 12]);
    }

    #[test]
    fn sctp_with_a_bad_crc_is_dropped_before_nat() {
        let (mut p, t, st) = setup();
        let mut init = c_sctp(ip4(VIP4), 40030, 0, &[(chunk::INIT, &init_value(3))]);
        init[14 + 20 + 8] ^= 0x01;
        let (v, _) = run(&mut p, &t, &st, 0, &init, NOW, false);
        assert_eq!(v, Verdict::Drop(DropReason::BadSctpChecksum));
        assert!(p.sessions.is_empty());
        // A corrupted payload byte (checksum field intact) is caught too:
        // recomputing the CRC after the port rewrite would have hidden it.
        let mut init = c_sctp(ip4(VIP4), 40031, 0, &[(chunk::INIT, &init_value(3))]);
        let n = init.len();
        init[n - 1] ^= 0x40;
        let (v, _) = run(&mut p, &t, &st, 0, &init, NOW, false);
        assert_eq!(v, Verdict::Drop(DropReason::BadSctpChecksum));
        assert!(p.sessions.is_empty());
    }

    #[test]
    fn malformed_sctp_is_dropped_with_the_right_reason() {
        let good = c_sctp(ip4(VIP4), 40040, 0, &[(chunk::INIT, &init_value(3))]);
        let l4 = 14 + 20;
        // Sets the SCTP length (IP total length) and fixes the IPv4 checksum.
        let with_len = |f: &[u8], sctp_len: usize| {
            let mut f = f[..l4 + sctp_len].to_vec();
            f[16..18].copy_from_slice(&((20 + sctp_len) as u16).to_be_bytes());
            fix_ip4_csum(&mut f);
            f
        };
        let chunk_len = |len: u16| {
            let mut f = good.clone();
            f[l4 + 14..l4 + 16].copy_from_slice(&len.to_be_bytes());
            f
        };
        let cases = [
            (
                "short common header",
                with_len(&good, 8),
                DropReason::Truncated,
            ),
            ("no chunk", with_len(&good, 12), DropReason::BadSctpChunk),
            (
                "partial chunk header",
                with_len(&good, 14),
                DropReason::BadSctpChunk,
            ),
            ("chunk length 0", chunk_len(0), DropReason::BadSctpChunk),
            ("chunk length 3", chunk_len(3), DropReason::BadSctpChunk),
            (
                "chunk past the packet",
                chunk_len(200),
                DropReason::BadSctpChunk,
            ),
        ];
        for (name, f, want) in cases {
            for handed_off in [false, true] {
                let (mut p, t, st) = setup();
                let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, handed_off);
                assert_eq!(v, Verdict::Drop(want), "{name}");
                assert!(p.sessions.is_empty(), "{name}");
            }
        }
        // IPv4 fragments of SCTP are not reassembled.
        let mut f = good.clone();
        f[14 + 6] |= 0x20;
        fix_ip4_csum(&mut f);
        let (mut p, t, st) = setup();
        let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
        assert_eq!(v, Verdict::Drop(DropReason::Fragment));
    }

    #[test]
    fn orphan_abort_opens_no_session() {
        let (mut p, t, st) = setup();
        for ty in [chunk::ABORT, chunk::SHUTDOWN_ACK, chunk::SHUTDOWN_COMPLETE] {
            let f = c_sctp(ip4(VIP4), 40050, 7, &[(ty, &[])]);
            let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
            assert_eq!(v, Verdict::Drop(DropReason::OrphanSctp), "chunk {ty}");
            // Not even to a Service without endpoints.
            let f = c_sctp(ip4(EMPTY4), 40050, 7, &[(ty, &[])]);
            let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
            assert_eq!(v, Verdict::Drop(DropReason::OrphanSctp), "chunk {ty}");
        }
        assert!(p.sessions.is_empty());
        assert_eq!(stat(&st.rejected), 0);
        // A DATA chunk is picked up mid-association (like TCP's liberal pickup).
        let f = c_sctp(ip4(VIP4), 40051, 7, &[(chunk::DATA, b"mid")]);
        let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(state(&p).0, SctpState::Established);
    }

    #[test]
    fn sctp_to_empty_service_gets_port_unreachable() {
        for v6 in [false, true] {
            let (mut p, t, st) = setup();
            let empty = if v6 { ip6(empty6()) } else { ip4(EMPTY4) };
            let f = c_sctp(empty, 40060, 0, &[(chunk::INIT, &init_value(5))]);
            let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
            assert_eq!(v, Verdict::Tx(0));
            let o = parse(&out); // verifies the ICMP(v6) checksum
            assert_eq!(o.icmp, Some(if v6 { (1, 4) } else { (3, 3) }));
            assert_eq!((o.src, o.dst), (Some(empty), Some(client(v6))));
            assert_eq!(o.dst_mac, CLIENT_MAC);
            // The offending packet is quoted whole and unchanged.
            assert_eq!(o.payload, &f[14..]);
            assert_eq!(stat(&st.rejected), 1);
            assert!(p.sessions.is_empty());
        }
    }

    #[test]
    fn backend_icmp_error_about_sctp_reaches_the_client_translated() {
        let (mut p, t, st) = setup();
        let init = c_sctp(ip4(VIP4), 40070, 0, &[(chunk::INIT, &init_value(6))]);
        let (v, out) = run(&mut p, &t, &st, 0, &init, NOW, false);
        assert_eq!(v, Verdict::Tx(1));
        let bi = backend_index(parse_sctp(&out).dst);
        // The backend's kernel has nothing on 9999: protocol/port unreachable,
        // quoting the whole (translated) packet.
        let err = icmp4_error(
            backend_mac(bi),
            P1_MAC,
            BACKENDS4[bi],
            CLIENT4,
            3,
            3,
            [0; 4],
            &out[14..],
        );
        let (v, out) = run(&mut p, &t, &st, 1, &err, NOW + 1, false);
        assert_eq!(v, Verdict::Tx(0));
        let o = parse(&out);
        assert_eq!((o.src, o.dst), (Some(ip4(VIP4)), Some(ip4(CLIENT4))));
        let (s, d, sp, dp, ok) = quoted4(&o.icmp_msg);
        assert_eq!((s, d, sp, dp), (CLIENT4, VIP4, 40070, 80));
        assert!(ok, "quoted IPv4 header checksum");
        // The client sees its own SCTP packet again, byte for byte — CRC
        // included (the quoted IP header differs only in the TTL it had).
        assert_eq!(&o.icmp_msg[8 + 20..], &init[14 + 20..]);
        let q = &o.icmp_msg[8 + 20..];
        assert_eq!(q[8..12], oracle_crc(q).to_le_bytes());
        assert_eq!(stat(&st.icmp_errors_translated), 1);
    }

    #[test]
    fn truncated_sctp_quote_is_translated_without_touching_the_crc() {
        let (mut p, t, st) = setup();
        let init = c_sctp(ip4(VIP4), 40080, 0, &[(chunk::INIT, &init_value(6))]);
        let (_, out) = run(&mut p, &t, &st, 0, &init, NOW, false);
        let backend = parse_sctp(&out).dst;
        let bi = backend_index(backend);
        let ack = sctp_frame(
            backend_mac(bi),
            P1_MAC,
            backend,
            ip4(CLIENT4),
            9999,
            40080,
            6,
            &[(chunk::INIT_ACK, &init_value(8))],
        );
        let (v, reply) = run(&mut p, &t, &st, 1, &ack, NOW, false);
        assert_eq!(v, Verdict::Tx(0));
        // A router towards the client quotes only IP header + 8 bytes.
        let router = [198, 18, 0, 254];
        let err = icmp4_error(
            CLIENT_MAC,
            P0_MAC,
            router,
            VIP4,
            3,
            4,
            [0, 0, 0x05, 0x00],
            &reply[14..14 + 28],
        );
        let (v, out) = run(&mut p, &t, &st, 0, &err, NOW + 1, false);
        assert_eq!(v, Verdict::Tx(1));
        let o = parse(&out);
        assert_eq!(o.dst, Some(backend));
        let (s, d, sp, dp, ok) = quoted4(&o.icmp_msg);
        assert_eq!((ip4(s), d, sp, dp), (backend, CLIENT4, 9999, 40080));
        assert!(ok);
        // Only 8 SCTP bytes are quoted: no checksum field to recompute.
        assert_eq!(o.icmp_msg.len(), 8 + 28);
    }

    #[test]
    fn masqueraded_sctp_uses_the_workers_snat_partition() {
        let t = masq_table(Default::default(), true);
        let st = WorkerStats::default();
        let mut w = [
            pipeline_with(0, 2, PipelineConfig::default(), &t),
            pipeline_with(1, 2, PipelineConfig::default(), &t),
        ];
        for sport in 42100..42120u16 {
            let init = c_sctp(ip4(VIP4), sport, 0, &[(chunk::INIT, &init_value(1))]);
            let owner = owner_of(&SockAddr::new(Addr::v4(CLIENT4), sport), 2) as usize;
            let (v, _) = run(&mut w[1 - owner], &t, &st, 0, &init, NOW, false);
            assert_eq!(v, Verdict::HandOff(owner as u16));
            let (v, out) = run(&mut w[owner], &t, &st, 0, &init, NOW, true);
            assert_eq!(v, Verdict::Tx(1));
            let o = parse_sctp(&out);
            assert_eq!(o.src, ip4(NODE1));
            assert_eq!(snat_owner(o.sport, 2) as usize, owner);
            let bi = backend_index(o.dst);
            let ack = sctp_frame(
                backend_mac(bi),
                P1_MAC,
                o.dst,
                ip4(NODE1),
                9999,
                o.sport,
                1,
                &[(chunk::INIT_ACK, &init_value(2))],
            );
            let (v, _) = run(&mut w[1 - owner], &t, &st, 1, &ack, NOW, false);
            assert_eq!(v, Verdict::HandOff(owner as u16));
            let (v, out) = run(&mut w[owner], &t, &st, 1, &ack, NOW, true);
            assert_eq!(v, Verdict::Tx(0));
            let r = parse_sctp(&out);
            assert_eq!((r.src, r.sport), (ip4(VIP4), 80));
            assert_eq!((r.dst, r.dport), (ip4(CLIENT4), sport));
        }
        assert_eq!(stat(&st.sessions_masqueraded), 20);
    }

    #[test]
    fn sctp_hairpin_is_masqueraded() {
        let t = masq_table(Default::default(), false);
        let st = WorkerStats::default();
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let mut hairpins = 0;
        for sport in 41000..41060u16 {
            let f = sctp_frame(
                backend_mac(0),
                P1_MAC,
                ip4(BACKENDS4[0]),
                ip4(VIP4),
                sport,
                80,
                0,
                &[(chunk::INIT, &init_value(1))],
            );
            let (v, out) = run(&mut p, &t, &st, 1, &f, NOW, false);
            assert_eq!(v, Verdict::Tx(1));
            let o = parse_sctp(&out);
            hairpins += usize::from(o.dst == ip4(BACKENDS4[0]));
            assert_eq!(o.src, ip4(NODE1));
            assert!(SNAT_PORTS.contains(&o.sport));
        }
        assert!(hairpins > 5, "{hairpins}");
    }

    #[test]
    fn oversized_sctp_gets_frag_needed() {
        let mut pp = ports();
        pp[1].mtu = 1000;
        let t = table();
        let st = WorkerStats::default();
        let mut p = Pipeline::new(0, 1, pp, PipelineConfig::default());
        p.on_table(&t);
        let mut f = c_sctp(ip4(VIP4), 40090, 0, &[(chunk::DATA, &[7u8; 1200])]);
        f[14 + 6] |= 0x40; // DF
        fix_ip4_csum(&mut f);
        let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
        assert_eq!(v, Verdict::Tx(0));
        let o = parse(&out);
        assert_eq!(o.icmp, Some((3, 4)));
        assert_eq!(&o.icmp_msg[6..8], &1000u16.to_be_bytes());
        assert_eq!(stat(&st.too_big_sent), 1);
    }

    #[test]
    fn sctp_associations_keep_a_removed_backend_like_tcp() {
        // kube-proxy flushes stale conntrack entries for UDP only: an SCTP
        // association to a removed endpoint stays, new ones avoid it.
        let (mut p, t, st) = setup();
        let mut by_port = StdHashMap::new();
        for sport in 30000..30060u16 {
            let f = c_sctp(ip4(VIP4), sport, 0, &[(chunk::INIT, &init_value(1))]);
            let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
            assert_eq!(v, Verdict::Tx(1));
            by_port.insert(sport, backend_index(parse_sctp(&out).dst));
        }
        assert!(by_port.values().any(|&b| b == 0));
        let mut spec2 = spec();
        for s in &mut spec2.services {
            s.backends.retain(|b| b.addr != Addr::v4(BACKENDS4[0]));
        }
        let t2 = ServiceTable::new(spec2, 2);
        p.on_table(&t2);
        for (&sport, &bi) in &by_port {
            let f = c_sctp(ip4(VIP4), sport, 2, &[(chunk::DATA, b"more")]);
            let (v, out) = run(&mut p, &t2, &st, 0, &f, NOW + 10, false);
            assert_eq!(v, Verdict::Tx(1));
            assert_eq!(backend_index(parse_sctp(&out).dst), bi, "{sport} moved");
        }
        assert_eq!(stat(&st.sessions_flushed), 0);
        for sport in 31000..31100u16 {
            let f = c_sctp(ip4(VIP4), sport, 0, &[(chunk::INIT, &init_value(1))]);
            let (_, out) = run(&mut p, &t2, &st, 0, &f, NOW + 20, false);
            assert_ne!(backend_index(parse_sctp(&out).dst), 0);
        }
    }

    #[test]
    fn chunk_bits_reach_the_state_machine_from_bundles() {
        // COOKIE ECHO bundled with DATA (as Linux sends it) counts as COOKIE ECHO.
        let (mut p, t, st) = setup();
        let f = c_sctp(ip4(VIP4), 40095, 0, &[(chunk::INIT, &init_value(1))]);
        run(&mut p, &t, &st, 0, &f, NOW, false);
        let f = c_sctp(
            ip4(VIP4),
            40095,
            1,
            &[(chunk::COOKIE_ECHO, b"cookie"), (chunk::DATA, b"data")],
        );
        let (v, _) = run(&mut p, &t, &st, 0, &f, NOW + 1, false);
        assert_eq!(v, Verdict::Tx(1));
        assert_eq!(state(&p).0, SctpState::CookieEchoed);
        assert_eq!(bits::of(chunk::COOKIE_ECHO), bits::COOKIE_ECHO);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any client endpoint and DATA payload: the SCTP packet reaches a
    /// backend on 9999 and the answer comes back from VIP:80, both with the
    /// CRC32c the independent oracle computes, payload untouched.
    #[test]
    fn sctp_forward_then_reverse_restores_the_tuple_and_crc(
        host in 3u8..=254,
        sport in 1024u16..=65535,
        vtag: u32,
        payload in proptest::collection::vec(any::<u8>(), 1..200),
        reply_payload in proptest::collection::vec(any::<u8>(), 1..200),
    ) {
        use sctp_flows::{parse_sctp, sctp_frame};
        let t = prop_table();
        let st = WorkerStats::default();
        let mut p = pipeline_with(0, 1, PipelineConfig::default(), &t);
        let client = ip4([198, 18, 0, host]);
        let cmac = [2, 0, 0, 0, 0xc0, host];
        let f = sctp_frame(cmac, P0_MAC, client, ip4(VIP4), sport, 80, vtag, &[(0, &payload)]);
        let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
        prop_assert_eq!(v, Verdict::Tx(1));
        let o = parse_sctp(&out);
        prop_assert_eq!((o.src, o.sport, o.dport, o.vtag), (client, sport, 9999, vtag));
        prop_assert_eq!(&o.chunks, &vec![(0u8, payload.clone())]);
        let bi = backend_index(o.dst);
        let r = sctp_frame(backend_mac(bi), P1_MAC, o.dst, client, 9999, sport, !vtag, &[(0, &reply_payload)]);
        let (v, out) = run(&mut p, &t, &st, 1, &r, NOW + 1, false);
        prop_assert_eq!(v, Verdict::Tx(0));
        let r = parse_sctp(&out);
        prop_assert_eq!((r.src, r.sport, r.dst, r.dport), (ip4(VIP4), 80, client, sport));
        prop_assert_eq!(r.dst_mac, cmac);
        prop_assert_eq!(&r.chunks, &vec![(0u8, reply_payload.clone())]);
    }
}

// ---------------------------------------------------------------------------
// The exception path into the host kernel (port 2: the kernel's TAP, paired
// with the uplink port 0 and carrying its MAC; NodePort 30080 on the node
// addresses).

const KERNEL: u16 = 2;
const NODE_PORT: u16 = 30080;

fn exception_setup() -> (Pipeline, ServiceTable, WorkerStats) {
    let mut s = spec();
    for (name, node) in [
        ("default/np0:http", ip4(NODE0)),
        ("default/np1:http", ip4(NODE1)),
    ] {
        let mut np = svc(
            name,
            node,
            NODE_PORT,
            Proto::Tcp,
            BACKENDS4.iter().map(|b| sa(ip4(*b), 8080)).collect(),
        );
        np.masquerade = true;
        np.external = true;
        s.services.push(np);
    }
    let t = ServiceTable::new(s, 1);
    let p = exception_workers(&t, 1).remove(0);
    (p, t, WorkerStats::default())
}

/// `n` workers over [`exception_setup`]'s ports, with its exception path.
fn exception_workers(t: &ServiceTable, n: u16) -> Vec<Pipeline> {
    let mut ports = ports();
    ports.push(PortInfo {
        mac: MacAddr(P0_MAC),
        vlan: None,
        mtu: 1500,
    });
    (0..n)
        .map(|id| {
            let mut p = Pipeline::new(id, n, ports.clone(), PipelineConfig::default());
            p.on_table(t);
            p.set_exception(Some(Exception::new(0, KERNEL)));
            p
        })
        .collect()
}

/// `frame` arriving on `port` goes to the kernel unchanged, counted.
fn assert_to_kernel(p: &mut Pipeline, t: &ServiceTable, st: &WorkerStats, port: u16, frame: &[u8]) {
    let before = stat(&st.exception_to_kernel);
    let (v, out) = run(p, t, st, port, frame, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    assert_eq!(out, frame, "changed on its way to the kernel");
    assert_eq!(stat(&st.exception_to_kernel), before + 1);
}

#[test]
fn exception_arp_for_the_node_goes_to_the_kernel_and_is_learned() {
    let (mut p, t, st) = exception_setup();
    let spa = [198, 18, 0, 3];
    let req = arp_frame(1, [0xff; 6], OTHER_MAC, spa, [0; 6], NODE0);
    assert_to_kernel(&mut p, &t, &st, 0, &req);
    assert_eq!(stat(&st.neighbor_replies), 0, "the kernel answers, not us");
    assert_eq!(
        p.take_learned().map(|u| u.addr).collect::<Vec<_>>(),
        vec![Addr::v4(spa)],
        "the dataplane still learns the sender"
    );
    // Replies (to our solicitations or the kernel's) and requests for
    // other hosts: learned, and the kernel sees them too.
    let rep = arp_frame(2, P0_MAC, OTHER_MAC, [198, 18, 0, 4], P0_MAC, NODE0);
    assert_to_kernel(&mut p, &t, &st, 0, &rep);
    let other = arp_frame(1, [0xff; 6], OTHER_MAC, spa, [0; 6], [198, 18, 0, 9]);
    assert_to_kernel(&mut p, &t, &st, 0, &other);
    // A VIP is the dataplane's own: still answered here.
    let req = arp_frame(1, [0xff; 6], CLIENT_MAC, CLIENT4, [0; 6], VIP4);
    let (v, out) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(arp_fields(&out), (2, P0_MAC, VIP4, CLIENT_MAC, CLIENT4));
    // A port that is not the exception path's uplink keeps the old answer.
    let req = arp_frame(1, [0xff; 6], backend_mac(0), BACKENDS4[0], [0; 6], NODE1);
    let (v, _) = run(&mut p, &t, &st, 1, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.exception_to_kernel), 3);
}

#[test]
fn exception_neighbor_discovery_for_the_node_goes_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    let ns = ndp_frame(
        OTHER_MAC,
        [0x33, 0x33, 0xff, 0, 0, 1],
        v6("2001:2::3"),
        snm(node6_0()),
        135,
        0,
        node6_0(),
        Some((1, OTHER_MAC)),
        255,
    );
    assert_to_kernel(&mut p, &t, &st, 0, &ns);
    let na = ndp_frame(
        OTHER_MAC,
        P0_MAC,
        v6("2001:2::3"),
        node6_0(),
        136,
        0x60,
        v6("2001:2::3"),
        Some((2, OTHER_MAC)),
        255,
    );
    assert_to_kernel(&mut p, &t, &st, 0, &na);
    assert_eq!(stat(&st.neighbor_replies), 0);
    // Multicast (here an echo to all-nodes) is the kernel's too.
    let mc = echo_frame(
        OTHER_MAC,
        [0x33, 0x33, 0, 0, 0, 1],
        ip6(v6("2001:2::3")),
        ip6(v6("ff02::1")),
        1,
        1,
        1,
    );
    assert_to_kernel(&mut p, &t, &st, 0, &mc);
}

#[test]
fn exception_echo_and_other_protocols_to_the_node_go_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    let f = echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 0x1234, 7, 64);
    assert_to_kernel(&mut p, &t, &st, 0, &f);
    let f = echo_frame(CLIENT_MAC, P0_MAC, ip6(client6()), ip6(node6_0()), 1, 8, 64);
    assert_to_kernel(&mut p, &t, &st, 0, &f);
    assert_eq!(stat(&st.echo_replies), 0);
    // Another EtherType (LLDP) to a multicast MAC.
    let mut lldp = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e];
    lldp.extend_from_slice(&OTHER_MAC);
    lldp.extend_from_slice(&[0x88, 0xcc]);
    lldp.resize(60, 0);
    assert_to_kernel(&mut p, &t, &st, 0, &lldp);
    // An echo through the node (routed) is not the kernel's.
    let f = echo_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(BACKENDS4[0]),
        1,
        1,
        64,
    );
    let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn exception_tcp_to_the_node_off_the_node_ports_goes_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    // ssh, then the rest of the connection, then a reset: all the kernel's.
    for flags in [SYN, ACK, ACK | FIN, RST] {
        let f = c_tcp(ip4(NODE0), 40000, 22, flags, 1, 1);
        assert_to_kernel(&mut p, &t, &st, 0, &f);
    }
    let f = c_tcp(ip6(node6_0()), 40000, 22, SYN, 1, 0);
    assert_to_kernel(&mut p, &t, &st, 0, &f);
    let f = udp_frame(
        CLIENT_MAC,
        P0_MAC,
        ip4(CLIENT4),
        ip4(NODE0),
        5000,
        53,
        64,
        b"q",
    );
    assert_to_kernel(&mut p, &t, &st, 0, &f);
    assert_eq!(p.sessions.len(), 0, "no session for the kernel's traffic");
    assert_eq!(stat(&st.routed), 0);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn exception_node_port_and_vip_traffic_is_translated_not_given_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    let syn = c_tcp(ip4(NODE0), 40001, NODE_PORT, SYN, 1000, 0);
    let (v, out) = run(&mut p, &t, &st, 0, &syn, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let bi = backend_index(o.dst.unwrap());
    assert_eq!(o.dport, 8080);
    assert_eq!(o.src, Some(ip4(NODE1)), "NodePort traffic is masqueraded");
    // The backend's answer comes back to the node address: the session's,
    // not the kernel's.
    let back = tcp_frame(
        backend_mac(bi),
        P1_MAC,
        o.dst.unwrap(),
        ip4(NODE1),
        8080,
        o.sport,
        SYN | ACK,
        5000,
        1001,
        64,
        &[],
    );
    let (v, out) = run(&mut p, &t, &st, 1, &back, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    let r = parse(&out);
    assert_eq!((r.src, r.sport), (Some(ip4(NODE0)), NODE_PORT));
    assert_eq!((r.dst, r.dport), (Some(ip4(CLIENT4)), 40001));
    // And the client's next segment takes the fast path, as before.
    let ack = c_tcp(ip4(NODE0), 40001, NODE_PORT, ACK, 1001, 5001);
    let (v, _) = run(&mut p, &t, &st, 0, &ack, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.fast_path), 1);
    // A ClusterIP VIP likewise.
    let (v, _) = run(&mut p, &t, &st, 0, &c_syn4(40002), NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.exception_to_kernel), 0);
    assert_eq!(stat(&st.sessions_created), 2);
}

#[test]
fn exception_frames_from_the_kernel_leave_by_the_uplink_unchanged() {
    let (mut p, t, st) = exception_setup();
    let frames = [
        // The kernel answers ARP for the node, with the node's (uplink's) MAC.
        arp_frame(2, CLIENT_MAC, P0_MAC, NODE0, CLIENT_MAC, CLIENT4),
        // ... asks for a neighbour,
        arp_frame(1, [0xff; 6], P0_MAC, NODE0, [0; 6], CLIENT4),
        // answers ping and a TCP connection,
        echo_frame(P0_MAC, CLIENT_MAC, ip4(NODE0), ip4(CLIENT4), 1, 1, 64),
        tcp_frame(
            P0_MAC,
            CLIENT_MAC,
            ip4(NODE0),
            ip4(CLIENT4),
            22,
            40000,
            SYN | ACK,
            9,
            2,
            64,
            &[],
        ),
        // and asks for a host that is not a VIP.
        arp_frame(1, [0xff; 6], P0_MAC, NODE0, [0; 6], [198, 18, 0, 9]),
    ];
    for f in &frames {
        let (v, out) = run(&mut p, &t, &st, KERNEL, f, NOW, false);
        assert_eq!(v, Verdict::FromKernel(0));
        assert_eq!(&out, f);
    }
    assert_eq!(stat(&st.exception_from_kernel), frames.len() as u64);
    assert_eq!(stat(&st.exception_to_kernel), 0);
    assert_eq!(p.sessions.len(), 0);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn without_an_exception_port_the_node_is_answered_by_the_dataplane() {
    let (mut p, t, st) = exception_setup();
    p.set_exception(None);
    let req = arp_frame(1, [0xff; 6], OTHER_MAC, [198, 18, 0, 3], [0; 6], NODE0);
    let (v, out) = run(&mut p, &t, &st, 0, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(arp_fields(&out).0, 2);
    let f = echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 1, 7, 64);
    let (v, out) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Tx(0));
    assert_eq!(parse(&out).icmp, Some((0, 0)));
    let f = c_tcp(ip4(NODE0), 40000, 22, SYN, 1, 0);
    let (v, _) = run(&mut p, &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::LocalUnhandled));
    let mut lldp = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e];
    lldp.extend_from_slice(&OTHER_MAC);
    lldp.extend_from_slice(&[0x88, 0xcc]);
    lldp.resize(60, 0);
    let (v, _) = run(&mut p, &t, &st, 0, &lldp, NOW, false);
    assert_eq!(v, Verdict::Drop(DropReason::UnknownEthertype));
    assert_eq!(
        stat(&st.exception_to_kernel) + stat(&st.exception_from_kernel),
        0
    );
}

#[test]
fn exception_with_several_workers_the_owner_gives_it_to_the_kernel() {
    let (_, t, st) = exception_setup();
    let mut w = exception_workers(&t, 2);
    // Traffic to a node address is owned by the worker of its destination
    // port's masquerade partition (worker 0 below 32768): the other worker
    // hands it over, the owner gives it to the kernel.
    let f = c_tcp(ip4(NODE0), 40000, 22, SYN, 1, 0);
    let (v, _) = run(&mut w[1], &t, &st, 0, &f, NOW, false);
    assert_eq!(v, Verdict::HandOff(0));
    assert_to_kernel(&mut w[0], &t, &st, 0, &f);
    // Pings, ARP and the kernel's own frames are handled where they arrive.
    let f = echo_frame(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 1, 1, 64);
    assert_to_kernel(&mut w[1], &t, &st, 0, &f);
    let f = arp_frame(1, [0xff; 6], CLIENT_MAC, CLIENT4, [0; 6], NODE0);
    assert_to_kernel(&mut w[1], &t, &st, 0, &f);
    let f = echo_frame(P0_MAC, CLIENT_MAC, ip4(NODE0), ip4(CLIENT4), 1, 1, 64);
    let (v, _) = run(&mut w[1], &t, &st, KERNEL, &f, NOW, false);
    assert_eq!(v, Verdict::FromKernel(0));
}

#[test]
fn exception_icmp_errors_for_the_kernels_flows_go_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    // A port unreachable about a datagram the kernel sent (no session).
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(NODE0, CLIENT4, 64)
        .udp(33000, 53)
        .write(&mut quoted, b"query")
        .unwrap();
    let mut f = Vec::new();
    ip_step(CLIENT_MAC, P0_MAC, ip4(CLIENT4), ip4(NODE0), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut f, &quoted)
        .unwrap();
    assert_to_kernel(&mut p, &t, &st, 0, &f);
    assert_eq!(stat(&st.icmp_errors_translated), 0);
}

#[test]
fn exception_kernel_traffic_to_a_service_is_translated_and_answered_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    // The kernel routes the Service CIDR onto its TAP and asks for the VIP:
    // answered here, with the node's MAC; the kernel is not learned.
    let req = arp_frame(1, [0xff; 6], P0_MAC, NODE0, [0; 6], VIP4);
    let (v, out) = run(&mut p, &t, &st, KERNEL, &req, NOW, false);
    assert_eq!(v, Verdict::Tx(KERNEL));
    assert_eq!(arp_fields(&out), (2, P0_MAC, VIP4, P0_MAC, NODE0));
    assert_eq!(p.take_learned().count(), 0);
    // Its connection to the VIP is translated like a client's.
    let syn = tcp_frame(
        P0_MAC,
        P0_MAC,
        ip4(NODE0),
        ip4(VIP4),
        41000,
        80,
        SYN,
        9,
        0,
        64,
        &[],
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &syn, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let bi = backend_index(o.dst.unwrap());
    assert_eq!(o.dport, 8080);
    // The backend's answer, translated back, goes to the kernel (addressed
    // to its MAC, no routing hop), not out of the uplink.
    let back = tcp_frame(
        backend_mac(bi),
        P1_MAC,
        o.dst.unwrap(),
        o.src.unwrap(),
        8080,
        o.sport,
        SYN | ACK,
        5000,
        10,
        64,
        &[],
    );
    for _ in 0..2 {
        let (v, out) = run(&mut p, &t, &st, 1, &back, NOW, false);
        assert_eq!(v, Verdict::ToKernel(KERNEL));
        let r = parse(&out);
        assert_eq!((r.dst_mac, r.src_mac), (P0_MAC, P0_MAC));
        assert_eq!((r.src, r.sport), (Some(ip4(VIP4)), 80));
        assert_eq!((r.dst, r.dport), (Some(ip4(NODE0)), 41000));
        assert_eq!(r.ttl, 64);
    }
    // The kernel's next segment takes the fast path.
    let ack = tcp_frame(
        P0_MAC,
        P0_MAC,
        ip4(NODE0),
        ip4(VIP4),
        41000,
        80,
        ACK,
        10,
        5001,
        64,
        &[],
    );
    let (v, _) = run(&mut p, &t, &st, KERNEL, &ack, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(stat(&st.fast_path), 1);
    assert_eq!(stat(&st.exception_from_kernel), 0);
    assert_eq!(stat(&st.exception_to_kernel), 2);
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn exception_kernel_connections_to_a_service_work_with_several_workers() {
    let (_, t, st) = exception_setup();
    let mut w = exception_workers(&t, 2);
    // The kernel's connections (not masqueraded: the backend sees the node
    // address) from ports all over the range: whichever worker the TAP
    // queue gives a packet to, the session lives where the backend's reply
    // to the node address is steered, and the reply reaches the kernel
    // translated.
    for i in 0..64u16 {
        let sport = 1024 + i * 1000;
        let syn = tcp_frame(
            P0_MAC,
            P0_MAC,
            ip4(NODE0),
            ip4(VIP4),
            sport,
            80,
            SYN,
            9,
            0,
            64,
            &[],
        );
        let arrives = usize::from(i % 2);
        let (mut v, mut out) = run(&mut w[arrives], &t, &st, KERNEL, &syn, NOW, false);
        if let Verdict::HandOff(o) = v {
            (v, out) = run(&mut w[usize::from(o)], &t, &st, KERNEL, &syn, NOW, true);
        }
        assert_eq!(v, Verdict::Tx(1), "port {sport}");
        let o = parse(&out);
        assert_eq!((o.src, o.sport), (Some(ip4(NODE0)), sport));
        let back = tcp_frame(
            backend_mac(backend_index(o.dst.unwrap())),
            P1_MAC,
            o.dst.unwrap(),
            ip4(NODE0),
            8080,
            sport,
            SYN | ACK,
            5000,
            10,
            64,
            &[],
        );
        let (mut v, mut out) = run(&mut w[1 - arrives], &t, &st, 1, &back, NOW, false);
        if let Verdict::HandOff(o) = v {
            (v, out) = run(&mut w[usize::from(o)], &t, &st, 1, &back, NOW, true);
        }
        assert_eq!(v, Verdict::ToKernel(KERNEL), "port {sport}");
        let r = parse(&out);
        assert_eq!((r.src, r.sport), (Some(ip4(VIP4)), 80), "port {sport}");
        assert_eq!((r.dst, r.dport), (Some(ip4(NODE0)), sport));
    }
    assert_eq!(st.total_drops(), 0);
}

#[test]
fn exception_kernel_traffic_to_an_ipv6_service_is_translated_and_answered_to_the_kernel() {
    let (mut p, t, st) = exception_setup();
    let ns = ndp_frame(
        P0_MAC,
        [0x33, 0x33, 0xff, 0, 1, 0],
        node6_0(),
        snm(vip6()),
        135,
        0,
        vip6(),
        Some((1, P0_MAC)),
        255,
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &ns, NOW, false);
    assert_eq!(v, Verdict::Tx(KERNEL));
    let o = parse(&out);
    assert_eq!(o.icmp, Some((136, 0)));
    assert_eq!((o.src, o.dst), (Some(ip6(vip6())), Some(ip6(node6_0()))));
    assert_eq!(p.take_learned().count(), 0);
    let syn = tcp_frame(
        P0_MAC,
        P0_MAC,
        ip6(node6_0()),
        ip6(vip6()),
        41000,
        80,
        SYN,
        9,
        0,
        64,
        &[],
    );
    let (v, out) = run(&mut p, &t, &st, KERNEL, &syn, NOW, false);
    assert_eq!(v, Verdict::Tx(1));
    let o = parse(&out);
    let back = tcp_frame(
        backend_mac(backend_index(o.dst.unwrap())),
        P1_MAC,
        o.dst.unwrap(),
        o.src.unwrap(),
        8080,
        o.sport,
        SYN | ACK,
        5000,
        10,
        64,
        &[],
    );
    let (v, out) = run(&mut p, &t, &st, 1, &back, NOW, false);
    assert_eq!(v, Verdict::ToKernel(KERNEL));
    let r = parse(&out);
    assert_eq!((r.src, r.sport), (Some(ip6(vip6())), 80));
    assert_eq!((r.dst, r.dport), (Some(ip6(node6_0())), 41000));
    assert_eq!(st.total_drops(), 0);
}

mod invariants;

// ---------------------------------------------------------------------------
// Least-connections and per-backend counters through the NAT function

/// Two workers sharing the node-wide counters over a table whose
/// VIP4:80/TCP Service uses `algorithm`, counters assigned as the
/// publisher does.
fn counted_workers(
    algorithm: crate::table::Algorithm,
) -> (
    [Pipeline; 2],
    ServiceTable,
    WorkerStats,
    Arc<crate::lbcount::BackendCounters>,
    crate::lbcount::CounterRegistry,
) {
    let mut s = spec();
    for x in &mut s.services {
        if x.frontend.addr == sa(ip4(VIP4), 80) && x.frontend.proto == Proto::Tcp {
            x.algorithm = algorithm;
        }
    }
    let t = ServiceTable::new(s, 1);
    let counters = Arc::new(crate::lbcount::BackendCounters::new(64));
    let mut reg = crate::lbcount::CounterRegistry::new(counters.clone());
    reg.update(&t, &[], true);
    let ps = [0u16, 1].map(|id| {
        let mut p = pipeline_with(id, 2, PipelineConfig::default(), &t);
        p.set_backend_counters(counters.clone());
        p
    });
    (ps, t, WorkerStats::default(), counters, reg)
}

/// Runs `frame` on worker `w`, following a hand-off to its owner.
fn run2(
    ps: &mut [Pipeline; 2],
    t: &ServiceTable,
    st: &WorkerStats,
    port: u16,
    frame: &[u8],
    now: u64,
) -> (Verdict, Vec<u8>) {
    match run(&mut ps[0], t, st, port, frame, now, false) {
        (Verdict::HandOff(o), _) => run(&mut ps[o as usize], t, st, port, frame, now, true),
        r => r,
    }
}

fn active_by_backend(t: &ServiceTable, c: &crate::lbcount::BackendCounters) -> [u64; 3] {
    let f = Frontend {
        addr: sa(ip4(VIP4), 80),
        proto: Proto::Tcp,
    };
    let s = t.service(t.frontend(&f).unwrap()).unwrap();
    BACKENDS4.map(|b| c.active(s.counter_of(&sa(ip4(b), 8080))).unwrap())
}

#[test]
fn least_connections_steers_new_connections_to_the_least_loaded_backend_across_workers() {
    let (mut ps, t, st, c, _) = counted_workers(crate::table::Algorithm::LeastConnections);
    // Nine connections from both workers: three per backend exactly.
    let mut conns = Vec::new();
    for sport in 43000..43009u16 {
        let (v, out) = run2(&mut ps, &t, &st, 0, &c_syn4(sport), NOW);
        assert_eq!(v, Verdict::Tx(1));
        conns.push((sport, backend_index(parse(&out).dst.unwrap())));
    }
    assert_eq!(active_by_backend(&t, &c), [3, 3, 3]);
    assert!(
        ps.iter().all(|p| !p.sessions.is_empty()),
        "both workers own sessions"
    );
    // Packets do not count.
    for &(sport, _) in &conns {
        run2(
            &mut ps,
            &t,
            &st,
            0,
            &c_tcp(ip4(VIP4), sport, 80, ACK, 1001, 1),
            NOW + 1,
        );
    }
    assert_eq!(active_by_backend(&t, &c), [3, 3, 3]);
    // The client closes backend 0's connections (FIN): they no longer count,
    // and the next three new connections all go to backend 0.
    for &(sport, b) in &conns {
        if b == 0 {
            run2(
                &mut ps,
                &t,
                &st,
                0,
                &c_tcp(ip4(VIP4), sport, 80, FIN | ACK, 1001, 1),
                NOW + 2,
            );
        }
    }
    assert_eq!(active_by_backend(&t, &c), [0, 3, 3]);
    for sport in 43100..43103u16 {
        let (_, out) = run2(&mut ps, &t, &st, 0, &c_syn4(sport), NOW + 3);
        assert_eq!(backend_index(parse(&out).dst.unwrap()), 0);
    }
    assert_eq!(active_by_backend(&t, &c), [3, 3, 3]);
    // Expiry ends every count exactly once (the closed ones are not ended twice).
    for p in &mut ps {
        while !p.sessions.is_empty() {
            p.sessions.expire(u64::MAX, 1024);
        }
    }
    assert_eq!(active_by_backend(&t, &c), [0, 0, 0]);
}

#[test]
fn every_algorithm_counts_sessions_until_they_end() {
    use crate::table::Algorithm;
    for alg in Algorithm::ALL {
        let (mut ps, t, st, c, _) = counted_workers(alg);
        for sport in 44000..44012u16 {
            let (v, _) = run2(&mut ps, &t, &st, 0, &c_syn4(sport), NOW);
            assert_eq!(v, Verdict::Tx(1));
        }
        let a = active_by_backend(&t, &c);
        assert_eq!(a.iter().sum::<u64>(), 12, "{alg:?}");
        for p in &mut ps {
            while !p.sessions.is_empty() {
                p.sessions.expire(u64::MAX, 1024);
            }
        }
        assert_eq!(active_by_backend(&t, &c), [0, 0, 0], "{alg:?}");
    }
}

#[test]
fn the_stale_udp_flush_ends_the_count_of_a_removed_backend() {
    let (mut ps, t, st, _, mut reg) = counted_workers(crate::table::Algorithm::Maglev);
    let dns = Frontend {
        addr: sa(ip4(VIP4), 53),
        proto: Proto::Udp,
    };
    let q = |sport| {
        udp_frame(
            CLIENT_MAC,
            P0_MAC,
            ip4(CLIENT4),
            ip4(VIP4),
            sport,
            53,
            64,
            b"q",
        )
    };
    let mut by = [0u64; 3];
    for sport in 45000..45030u16 {
        let (v, out) = run2(&mut ps, &t, &st, 0, &q(sport), NOW);
        assert_eq!(v, Verdict::Tx(1));
        by[backend_index(parse(&out).dst.unwrap())] += 1;
    }
    let svc = t.service(t.frontend(&dns).unwrap()).unwrap();
    let counts = |s: &crate::table::Service| {
        s.backend_connections()
            .iter()
            .map(|r| r.1)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(svc), by.to_vec());
    // Backend 0 removed (the same counters for the others, as the publisher
    // hands out): the next packet of each of its flows flushes the session.
    let mut s2 = spec();
    for x in &mut s2.services {
        x.backends
            .retain(|b| b.addr != Addr::from(ip4(BACKENDS4[0])));
    }
    let mut t2 = ServiceTable::new(s2, 2);
    t2.inherit_flush_epoch(&t.epoch, t.services());
    reg.update(&t2, t.services(), true);
    for p in &mut ps {
        p.on_table(&t2);
    }
    for sport in 45000..45030u16 {
        run2(&mut ps, &t2, &st, 0, &q(sport), NOW + 1);
    }
    let svc2 = t2.service(t2.frontend(&dns).unwrap()).unwrap();
    // Backend 0's count ended; its flows went to 1 and 2 (counted there).
    assert_eq!(counts(svc)[0], 0);
    assert_eq!(counts(svc2).iter().sum::<u64>(), 30);
}

mod pods;
