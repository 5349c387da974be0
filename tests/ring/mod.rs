//! Shared pieces of the ring-PMD integration tests: the wire side of
//! `net_ring` ports (inject frames into rx rings, collect from tx rings),
//! frame builders, output verification with etherparse, worker statistics.
#![allow(dead_code)]
use dataplane::addr::{owner_of, Addr, SockAddr};
use dataplane::dpdk::{Eal, Mempool, Port, Ring, RxBurst};
use dataplane::pipeline::PacketBuf;
use dataplane::stats::{DropReason, WorkerStats};
use dataplane::worker::Running;
use etherparse::{
    Ethernet2Header, Ipv4Header, PacketBuilder, PacketHeaders, PayloadSlice, TransportHeader,
};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const N_WORKERS: usize = 2;
pub const RING_SIZE: u32 = 1024;
/// How long to wait for expected output.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long to keep polling after the expected output arrived, to catch extras.
pub const SETTLE: Duration = Duration::from_millis(30);

pub const CLIENT: [u8; 4] = [198, 18, 0, 2];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const NODE0: [u8; 4] = [198, 18, 0, 1];
pub const VIP: [u8; 4] = [198, 18, 100, 1];
pub const BACKENDS: [[u8; 4]; 3] = [[198, 18, 1, 11], [198, 18, 1, 12], [198, 18, 1, 13]];
pub const BACKEND_MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0x01, 0x11],
    [0x02, 0, 0, 0, 0x01, 0x12],
    [0x02, 0, 0, 0, 0x01, 0x13],
];
pub const TCP_BACKEND_PORT: u16 = 8080;
pub const UDP_BACKEND_PORT: u16 = 5353;

pub const PORT_NAMES: [&str; 2] = ["dkp_t0", "dkp_t1"];

/// One ring-backed port as the test sees it: the wire side of its queues.
pub struct WirePort {
    /// Rings the port's rx queues read from (we produce).
    pub rx: Vec<Ring>,
    /// Rings the port's tx queues write to (we consume).
    pub tx: Vec<Ring>,
    /// The handle `from_rings` returned (never started by us).
    pub port: Port,
    /// Frames we put on the rx rings.
    pub sent: Cell<u64>,
    /// Frames we took off the tx rings.
    pub got: Cell<u64>,
}

impl WirePort {
    pub fn new(name: &str) -> WirePort {
        let rx: Vec<Ring> = (0..N_WORKERS)
            .map(|q| Ring::new(&format!("{name}_rx{q}"), RING_SIZE, 0).expect("rx ring"))
            .collect();
        let tx: Vec<Ring> = (0..N_WORKERS)
            .map(|q| Ring::new(&format!("{name}_tx{q}"), RING_SIZE, 0).expect("tx ring"))
            .collect();
        let rxr: Vec<&Ring> = rx.iter().collect();
        let txr: Vec<&Ring> = tx.iter().collect();
        let port = Port::from_rings(name, &rxr, &txr, 0).expect("rte_eth_from_rings");
        WirePort {
            rx,
            tx,
            port,
            sent: Cell::new(0),
            got: Cell::new(0),
        }
    }
}

/// Copies `frame` into a fresh mbuf and puts it on rx queue `q` of `w`.
pub fn inject(pool: &Mempool, w: &WirePort, q: usize, frame: &[u8]) {
    let mut m = pool.alloc().expect("test pool exhausted");
    m.set_len(frame.len());
    assert_eq!(m.len(), frame.len(), "frame does not fit an mbuf");
    m.data_mut().copy_from_slice(frame);
    if w.rx[q].enqueue(m).is_err() {
        panic!("rx ring full");
    }
    w.sent.set(w.sent.get() + 1);
}

/// Polls the tx rings of `w` until `want` frames arrived or `timeout` passed.
/// Returns `(tx queue, frame bytes)`.
pub fn collect(w: &WirePort, want: usize, timeout: Duration) -> Vec<(usize, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut b = RxBurst::default();
    loop {
        let mut got = 0;
        for (q, r) in w.tx.iter().enumerate() {
            got += r.dequeue(&mut b);
            for m in b.by_ref() {
                out.push((q, m.data().to_vec()));
            }
        }
        if out.len() >= want || Instant::now() >= deadline {
            w.got.set(w.got.get() + out.len() as u64);
            return out;
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Waits for exactly `n` frames out of `w` (none more within `SETTLE`).
pub fn expect_frames(r: &Running, w: &WirePort, n: usize, what: &str) -> Vec<(usize, Vec<u8>)> {
    let mut got = collect(w, n, WAIT);
    if got.len() == n {
        got.extend(collect(w, usize::MAX, SETTLE));
    }
    assert_eq!(
        got.len(),
        n,
        "{what}: expected {n} frames, got {}; {}",
        got.len(),
        stats_summary(r)
    );
    got
}

/// Everything the workers transmitted on both ports: must be nothing.
pub fn expect_silence(r: &Running, wire: &[WirePort], dur: Duration, what: &str) {
    for (i, w) in wire.iter().enumerate() {
        let got = collect(w, usize::MAX, dur);
        assert!(
            got.is_empty(),
            "{what}: {} unexpected frames on port {i}; {}",
            got.len(),
            stats_summary(r)
        );
    }
}

pub fn sum(r: &Running, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    r.stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
}

pub fn drops(r: &Running, reason: DropReason) -> u64 {
    r.stats.iter().map(|s| s.drops_for(reason)).sum()
}

pub fn total_drops(r: &Running) -> u64 {
    r.stats.iter().map(|s| s.total_drops()).sum()
}

pub fn stats_summary(r: &Running) -> String {
    let mut s = String::new();
    for (i, w) in r.stats.iter().enumerate() {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s += &format!(
            "[w{i}: rx {} tx {} ho_out {} ho_in {} created {} fwd {} rev {} ver {} loops {}",
            l(&w.rx_packets),
            l(&w.tx_packets),
            l(&w.handoff_out),
            l(&w.handoff_in),
            l(&w.sessions_created),
            l(&w.nat_forward),
            l(&w.nat_reverse),
            l(&w.table_version),
            l(&w.loops)
        );
        for reason in DropReason::ALL {
            let d = w.drops_for(*reason);
            if d > 0 {
                s += &format!(" drop:{}={d}", reason.as_str());
            }
        }
        s += "] ";
    }
    s
}

/// Polls `cond` until it holds or `WAIT` passes.
pub fn wait_until(what: &str, r: &Running, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; {}",
            stats_summary(r)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until every worker uses table version `v`.
pub fn wait_for_table(r: &Running, v: u64) {
    wait_until(&format!("table v{v} on every worker"), r, || {
        r.stats
            .iter()
            .all(|s| s.table_version.load(Ordering::Relaxed) == v)
    });
}

pub fn owner(ip: [u8; 4], port: u16) -> usize {
    owner_of(&SockAddr::new(Addr::v4(ip), port), N_WORKERS as u16) as usize
}

pub fn backend_index(ip: [u8; 4]) -> usize {
    BACKENDS
        .iter()
        .position(|b| *b == ip)
        .unwrap_or_else(|| panic!("{ip:?} is not a backend"))
}

// ---- frame builders ----

pub fn tcp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    syn: bool,
    ack: Option<u32>,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 64240);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut v = Vec::with_capacity(b.size(0));
    b.write(&mut v, &[]).expect("build tcp");
    v
}

pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("build udp");
    v
}

pub fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    Ethernet2Header {
        source: sha,
        destination: [0xff; 6],
        ether_type: etherparse::EtherType::ARP,
    }
    .write(&mut v)
    .unwrap();
    v.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    v.extend_from_slice(&sha);
    v.extend_from_slice(&spa);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&tpa);
    v.resize(60, 0); // Ethernet minimum, as on a real wire.
    v
}

/// RFC 1071 checksum of an IPv4 header (for building malformed frames only).
pub fn ipv4_header_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for (i, c) in h.chunks(2).enumerate() {
        if i == 5 {
            continue; // the checksum field itself
        }
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

// ---- verification ----

/// An output frame parsed and checked by etherparse: Ethernet II, IPv4 with a
/// valid header checksum, TCP/UDP with a valid checksum recomputed here.
pub struct Out {
    pub eth: Ethernet2Header,
    pub ip: Ipv4Header,
    pub l4: TransportHeader,
    pub payload: Vec<u8>,
}

pub fn parse_out(frame: &[u8]) -> Out {
    let h = PacketHeaders::from_ethernet_slice(frame)
        .unwrap_or_else(|e| panic!("unparsable output {e:?}: {frame:02x?}"));
    assert!(h.vlan.is_none(), "unexpected VLAN tag");
    let eth = h
        .link
        .clone()
        .and_then(|l| l.ethernet2())
        .expect("ethernet II");
    let (ip, _) = h.net.as_ref().and_then(|n| n.ipv4_ref()).expect("ipv4");
    let ip = ip.clone();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    assert_eq!(
        usize::from(ip.total_len),
        frame.len() - 14,
        "IPv4 total length vs frame"
    );
    let payload: Vec<u8> = match h.payload {
        PayloadSlice::Tcp(p) | PayloadSlice::Udp(p) => p.to_vec(),
        ref other => panic!("unexpected payload {other:?}"),
    };
    let l4 = h.transport.clone().expect("transport header");
    match &l4 {
        TransportHeader::Tcp(t) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(&ip, &payload).unwrap(),
                "TCP checksum"
            );
        }
        TransportHeader::Udp(u) => {
            assert_ne!(u.checksum, 0, "UDP checksum dropped");
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(&ip, &payload).unwrap(),
                "UDP checksum"
            );
            assert_eq!(usize::from(u.length), 8 + payload.len(), "UDP length");
        }
        other => panic!("unexpected transport {other:?}"),
    }
    Out {
        eth,
        ip,
        l4,
        payload,
    }
}

pub fn tcp_of(o: &Out) -> &etherparse::TcpHeader {
    match &o.l4 {
        TransportHeader::Tcp(t) => t,
        other => panic!("expected TCP, got {other:?}"),
    }
}

pub fn udp_of(o: &Out) -> &etherparse::UdpHeader {
    match &o.l4 {
        TransportHeader::Udp(u) => u,
        other => panic!("expected UDP, got {other:?}"),
    }
}

/// Verifies a client→service packet after DNAT (out of port 1); returns the backend index.
pub fn check_forward(o: &Out, port1_mac: [u8; 6], client_port: u16, proto_tcp: bool) -> usize {
    let b = backend_index(o.ip.destination);
    assert_eq!(o.eth.source, port1_mac, "forward: source MAC is port 1's");
    assert_eq!(
        o.eth.destination, BACKEND_MACS[b],
        "forward: destination MAC is the backend's static neighbour"
    );
    assert_eq!(o.eth.ether_type, etherparse::EtherType::IPV4);
    assert_eq!(
        o.ip.source, CLIENT,
        "forward: client address kept (no SNAT)"
    );
    assert_eq!(o.ip.time_to_live, 63, "forward: TTL decremented");
    if proto_tcp {
        let t = tcp_of(o);
        assert_eq!(
            (t.source_port, t.destination_port),
            (client_port, TCP_BACKEND_PORT)
        );
    } else {
        let u = udp_of(o);
        assert_eq!(
            (u.source_port, u.destination_port),
            (client_port, UDP_BACKEND_PORT)
        );
    }
    b
}

/// Verifies a backend→client packet after reverse NAT (out of port 0).
pub fn check_reply(o: &Out, port0_mac: [u8; 6], client_port: u16, svc_port: u16) {
    assert_eq!(o.eth.source, port0_mac, "reply: source MAC is port 0's");
    assert_eq!(
        o.eth.destination, CLIENT_MAC,
        "reply: destination MAC is the client's static neighbour"
    );
    assert_eq!(o.ip.source, VIP, "reply: source rewritten to the VIP");
    assert_eq!(o.ip.destination, CLIENT);
    assert_eq!(o.ip.time_to_live, 63, "reply: TTL decremented");
    let (sp, dp) = match &o.l4 {
        TransportHeader::Tcp(t) => (t.source_port, t.destination_port),
        TransportHeader::Udp(u) => (u.source_port, u.destination_port),
        _ => unreachable!(),
    };
    assert_eq!((sp, dp), (svc_port, client_port), "reply: ports");
}

/// Stops the workers even when an assertion fails, so that a failing test
/// ends instead of leaving workers polling closed ports.
pub struct Guard<'a> {
    pub running: Option<Running>,
    pub eal: &'a Eal,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let codes = r.shutdown(self.eal);
            eprintln!("dataplane stopped after a failure (worker codes {codes:?})");
        }
    }
}
