//! End-to-end test of the DPDK dataplane over ring-backed ports.
//!
//! Two `net_ring` ports (2 rx + 2 tx rings each) are driven by two worker
//! lcores exactly as the binary drives real NICs: `worker::start` looks the
//! ports up by name, configures two queues per port, and launches one worker
//! per lcore. The test thread plays the wire: it writes frames into real
//! mbufs, enqueues them on a port's rx rings (the ring index emulates RSS),
//! and reads what the workers transmit from the tx rings.
//!
//! EAL can be initialised once per process, so there is a single `#[test]`
//! running every scenario in sequence. It needs root (EAL, `--no-huge`).
//! Run: `cargo test --test dataplane_ring -- --nocapture`.
use control::config::Config;
use control::publisher::Publisher;
use dataplane::addr::{owner_of, Addr, SockAddr};
use dataplane::dpdk::{Eal, Mempool, Port, Ring, RxBurst};
use dataplane::pipeline::PacketBuf;
use dataplane::stats::{DropReason, WorkerStats};
use dataplane::worker::{self, Running};
use etherparse::{
    Ethernet2Header, Ipv4Header, PacketBuilder, PacketHeaders, PayloadSlice, TransportHeader,
};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const N_WORKERS: usize = 2;
const RING_SIZE: u32 = 1024;
/// How long to wait for expected output.
const WAIT: Duration = Duration::from_secs(2);
/// How long to keep polling after the expected output arrived, to catch extras.
const SETTLE: Duration = Duration::from_millis(30);

const CLIENT: [u8; 4] = [198, 18, 0, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const NODE0: [u8; 4] = [198, 18, 0, 1];
const VIP: [u8; 4] = [198, 18, 100, 1];
const BACKENDS: [[u8; 4]; 3] = [[198, 18, 1, 11], [198, 18, 1, 12], [198, 18, 1, 13]];
const BACKEND_MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0x01, 0x11],
    [0x02, 0, 0, 0, 0x01, 0x12],
    [0x02, 0, 0, 0, 0x01, 0x13],
];
const TCP_BACKEND_PORT: u16 = 8080;
const UDP_BACKEND_PORT: u16 = 5353;

const PORT_NAMES: [&str; 2] = ["dkp_t0", "dkp_t1"];

fn yaml(backends: &[usize]) -> String {
    let tcp: Vec<String> = backends
        .iter()
        .map(|&i| {
            format!(
                "\"{}:{TCP_BACKEND_PORT}\"",
                std::net::Ipv4Addr::from(BACKENDS[i])
            )
        })
        .collect();
    let udp: Vec<String> = backends
        .iter()
        .map(|&i| {
            format!(
                "\"{}:{UDP_BACKEND_PORT}\"",
                std::net::Ipv4Addr::from(BACKENDS[i])
            )
        })
        .collect();
    format!(
        r#"
eal:
  lcores: "0@(0-1),1@(0-1),2@(0-1)"
  no_huge: true
  memory_mb: 256
  args: ["--log-level", "*:warning"]
ports:
  - device: net_ring_{p0}
    addresses: ["198.18.0.1/24"]
  - device: net_ring_{p1}
    addresses: ["198.18.1.1/24"]
neighbors:
  - {{address: 198.18.0.2, mac: "02:00:00:00:00:aa", port: 0}}
  - {{address: 198.18.1.11, mac: "02:00:00:00:01:11", port: 1}}
  - {{address: 198.18.1.12, mac: "02:00:00:00:01:12", port: 1}}
  - {{address: 198.18.1.13, mac: "02:00:00:00:01:13", port: 1}}
workers:
  sessions: 4096
  idle_sleep_us: 20
services:
  - name: default/web:http
    vip: 198.18.100.1
    port: 80
    protocol: TCP
    backends: [{tcp}]
  - name: default/dns:dns
    vip: 198.18.100.1
    port: 53
    protocol: UDP
    backends: [{udp}]
"#,
        p0 = PORT_NAMES[0],
        p1 = PORT_NAMES[1],
        tcp = tcp.join(", "),
        udp = udp.join(", "),
    )
}

/// One ring-backed port as the test sees it: the wire side of its queues.
struct WirePort {
    /// Rings the port's rx queues read from (we produce).
    rx: Vec<Ring>,
    /// Rings the port's tx queues write to (we consume).
    tx: Vec<Ring>,
    /// The handle `from_rings` returned (never started by us).
    port: Port,
    /// Frames we put on the rx rings.
    sent: Cell<u64>,
    /// Frames we took off the tx rings.
    got: Cell<u64>,
}

impl WirePort {
    fn new(name: &str) -> WirePort {
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
fn inject(pool: &Mempool, w: &WirePort, q: usize, frame: &[u8]) {
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
fn collect(w: &WirePort, want: usize, timeout: Duration) -> Vec<(usize, Vec<u8>)> {
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
fn expect_frames(r: &Running, w: &WirePort, n: usize, what: &str) -> Vec<(usize, Vec<u8>)> {
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
fn expect_silence(r: &Running, wire: &[WirePort], dur: Duration, what: &str) {
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

fn sum(r: &Running, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    r.stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
}

fn drops(r: &Running, reason: DropReason) -> u64 {
    r.stats.iter().map(|s| s.drops_for(reason)).sum()
}

fn total_drops(r: &Running) -> u64 {
    r.stats.iter().map(|s| s.total_drops()).sum()
}

fn stats_summary(r: &Running) -> String {
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
fn wait_until(what: &str, r: &Running, mut cond: impl FnMut() -> bool) {
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

fn owner(ip: [u8; 4], port: u16) -> usize {
    owner_of(&SockAddr::new(Addr::v4(ip), port), N_WORKERS as u16) as usize
}

fn backend_index(ip: [u8; 4]) -> usize {
    BACKENDS
        .iter()
        .position(|b| *b == ip)
        .unwrap_or_else(|| panic!("{ip:?} is not a backend"))
}

// ---- frame builders ----

fn tcp_frame(
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

fn udp_frame(
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

fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
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
fn ipv4_header_checksum(h: &[u8]) -> u16 {
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
struct Out {
    eth: Ethernet2Header,
    ip: Ipv4Header,
    l4: TransportHeader,
    payload: Vec<u8>,
}

fn parse_out(frame: &[u8]) -> Out {
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

fn tcp_of(o: &Out) -> &etherparse::TcpHeader {
    match &o.l4 {
        TransportHeader::Tcp(t) => t,
        other => panic!("expected TCP, got {other:?}"),
    }
}

fn udp_of(o: &Out) -> &etherparse::UdpHeader {
    match &o.l4 {
        TransportHeader::Udp(u) => u,
        other => panic!("expected UDP, got {other:?}"),
    }
}

/// Verifies a client→service packet after DNAT (out of port 1); returns the backend index.
fn check_forward(o: &Out, port1_mac: [u8; 6], client_port: u16, proto_tcp: bool) -> usize {
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
fn check_reply(o: &Out, port0_mac: [u8; 6], client_port: u16, svc_port: u16) {
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
struct Guard<'a> {
    running: Option<Running>,
    eal: &'a Eal,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let codes = r.shutdown(self.eal);
            eprintln!("dataplane stopped after a failure (worker codes {codes:?})");
        }
    }
}

#[test]
fn dataplane_over_ring_ports() {
    let t0 = Instant::now();

    // ---- configuration through the YAML path ----
    let cfg = Config::parse(&yaml(&[0, 1, 2]), "dataplane_ring.yaml").expect("config");
    let args = cfg.eal_args();
    let mut want_args: Vec<String> = [
        "--lcores",
        "0@(0-1),1@(0-1),2@(0-1)",
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want_args.extend(["--log-level".to_string(), "*:warning".to_string()]);
    assert_eq!(args, want_args);
    assert!(
        !args.iter().any(|a| a == "--in-memory"),
        "--in-memory must not be combined with --no-huge"
    );

    let eal = Eal::init(&args).expect("EAL init (run as root)");
    assert!(matches!(
        Eal::init(&args),
        Err(dataplane::dpdk::Error::AlreadyInitialised)
    ));
    let lcores = eal.worker_lcores();
    assert_eq!(lcores, vec![1, 2], "two worker lcores");
    println!("EAL up ({}) in {:?}", Eal::version(), t0.elapsed());

    let pool = Mempool::new("test_pool", 8191, 0, 2176, 0).expect("test mempool");
    let wire: Vec<WirePort> = PORT_NAMES.iter().map(|n| WirePort::new(n)).collect();
    // rte_eth_from_rings(name) registers the device as "net_ring_<name>":
    // that is the name worker::start (Port::by_name) needs.
    for (w, n) in wire.iter().zip(PORT_NAMES) {
        assert_eq!(
            Port::by_name(&format!("net_ring_{n}"))
                .expect("net_ring_ name")
                .id(),
            w.port.id()
        );
        assert!(
            Port::by_name(n).is_err(),
            "the bare name is not the device name"
        );
    }
    assert_eq!(
        wire[0].port.caps().unwrap().max_rx_queues as usize,
        N_WORKERS
    );

    let dp = cfg.dataplane(lcores);
    assert_eq!(
        dp.ports
            .iter()
            .map(|p| p.device.as_str())
            .collect::<Vec<_>>(),
        ["net_ring_dkp_t0", "net_ring_dkp_t1"]
    );
    assert_eq!((dp.pipeline.sessions, dp.idle_sleep_us), (4096, 20));
    assert_eq!(dp.lcores, [1, 2]);

    let mut publisher = Publisher::new(N_WORKERS);
    let mut guard = Guard {
        running: Some(
            worker::start(&eal, &dp, publisher.rcu()).expect("worker::start over ring ports"),
        ),
        eal: &eal,
    };
    let running = guard.running.as_ref().unwrap();
    assert_eq!(running.drivers, ["net_ring", "net_ring"]);
    assert_eq!(
        running.port_ids(),
        wire.iter().map(|w| w.port.id()).collect::<Vec<_>>()
    );
    let mac0 = running.port_info[0].mac.0;
    let mac1 = running.port_info[1].mac.0;
    // The ring PMD gives every port the all-zero MAC (its private data is
    // zeroed and it has no mac_addr_set op); the port identity is checked by
    // which tx rings frames come out of.
    for (i, w) in wire.iter().enumerate() {
        assert_eq!(w.port.mac().unwrap().0, running.port_info[i].mac.0);
    }
    println!(
        "dataplane started in {:?} (port MACs {mac0:02x?} {mac1:02x?})",
        t0.elapsed()
    );

    let v1 = publisher.publish(cfg.table_spec().unwrap());
    wait_until("table v1 on every worker", running, || {
        running
            .stats
            .iter()
            .all(|s| s.table_version.load(Ordering::Relaxed) == v1)
    });
    let (p0, p1) = (&wire[0], &wire[1]);

    // ---- 1. TCP: 200 SYNs over both rx queues, SYN-ACKs back, cross-core hand-off ----
    let t = Instant::now();
    const N_SYN: u16 = 200;
    let sport = |i: u16| 10_000 + i;
    for i in 0..N_SYN {
        let f = tcp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, sport(i)),
            (VIP, 80),
            1000 + u32::from(i),
            true,
            None,
        );
        inject(&pool, p0, usize::from(i) % 2, &f);
    }
    let out = expect_frames(running, p1, usize::from(N_SYN), "SYNs out of port 1");
    let mut backend_of: HashMap<u16, usize> = HashMap::new();
    let mut per_backend = [0usize; 3];
    for (q, f) in &out {
        let o = parse_out(f);
        let t = tcp_of(&o);
        let cport = t.source_port;
        let b = check_forward(&o, mac1, cport, true);
        assert!(t.syn && !t.ack && !t.rst && !t.fin, "SYN flags kept");
        assert_eq!(
            t.sequence_number,
            1000 + u32::from(cport - 10_000),
            "sequence number kept"
        );
        assert_eq!(
            *q,
            owner(CLIENT, cport),
            "transmitted by the flow's owner worker"
        );
        assert!(
            backend_of.insert(cport, b).is_none(),
            "duplicate output for client port {cport}"
        );
        per_backend[b] += 1;
    }
    assert_eq!(backend_of.len(), usize::from(N_SYN));
    for (b, n) in per_backend.iter().enumerate() {
        let share = *n as f64 / f64::from(N_SYN);
        assert!(
            (0.20..=0.47).contains(&share),
            "backend {b} got {n}/{N_SYN} flows: {per_backend:?}"
        );
    }
    assert_eq!(sum(running, |s| &s.sessions_created), u64::from(N_SYN));
    let owned_by_0 = (0..N_SYN).filter(|&i| owner(CLIENT, sport(i)) == 0).count();
    println!(
        "scenario 1: per-backend {per_backend:?}; {owned_by_0}/{N_SYN} flows owned by worker 0"
    );

    // SYN-ACKs from the backends, half on the owner's queue and half on the other one.
    let mut non_owner = 0;
    for i in 0..N_SYN {
        let cport = sport(i);
        let b = backend_of[&cport];
        let o = owner(CLIENT, cport);
        let q = if i % 2 == 0 { o } else { 1 - o };
        non_owner += usize::from(q != o);
        let f = tcp_frame(
            BACKEND_MACS[b],
            mac1,
            (BACKENDS[b], TCP_BACKEND_PORT),
            (CLIENT, cport),
            50_000 + u32::from(i),
            true,
            Some(1001 + u32::from(i)),
        );
        inject(&pool, p1, q, &f);
    }
    assert!(non_owner > 0);
    let out = expect_frames(running, p0, usize::from(N_SYN), "SYN-ACKs out of port 0");
    let mut seen = HashSet::new();
    for (q, f) in &out {
        let o = parse_out(f);
        let t = tcp_of(&o);
        let cport = t.destination_port;
        check_reply(&o, mac0, cport, 80);
        assert!(t.syn && t.ack, "SYN-ACK flags kept");
        let i = u32::from(cport - 10_000);
        assert_eq!(
            (t.sequence_number, t.acknowledgment_number),
            (50_000 + i, 1001 + i)
        );
        assert_eq!(
            *q,
            owner(CLIENT, cport),
            "reply transmitted by the flow's owner worker"
        );
        assert!(seen.insert(cport), "duplicate reply for {cport}");
    }
    let ho_out = sum(running, |s| &s.handoff_out);
    let ho_in = sum(running, |s| &s.handoff_in);
    assert!(
        ho_out > 0,
        "no cross-core hand-off happened; {}",
        stats_summary(running)
    );
    assert_eq!(ho_out, ho_in, "every handed-off packet arrived");
    assert_eq!(sum(running, |s| &s.nat_forward), u64::from(N_SYN));
    assert_eq!(sum(running, |s| &s.nat_reverse), u64::from(N_SYN));
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 1 (TCP, {N_SYN} flows, hand-offs {ho_out}, {non_owner} replies on the non-owner queue) ok in {:?}",
        t.elapsed()
    );

    // ---- 2. UDP request/response ----
    let t = Instant::now();
    const N_UDP: u16 = 40;
    let uport = |i: u16| 20_000 + i;
    for i in 0..N_UDP {
        let f = udp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, uport(i)),
            (VIP, 53),
            format!("query-{i}").as_bytes(),
        );
        inject(&pool, p0, usize::from(i) % 2, &f);
    }
    let out = expect_frames(
        running,
        p1,
        usize::from(N_UDP),
        "UDP requests out of port 1",
    );
    let mut udp_backend: HashMap<u16, usize> = HashMap::new();
    for (q, f) in &out {
        let o = parse_out(f);
        let cport = udp_of(&o).source_port;
        let b = check_forward(&o, mac1, cport, false);
        assert_eq!(
            o.payload,
            format!("query-{}", cport - 20_000).as_bytes(),
            "payload kept"
        );
        assert_eq!(*q, owner(CLIENT, cport));
        assert!(udp_backend.insert(cport, b).is_none());
    }
    for i in 0..N_UDP {
        let cport = uport(i);
        let b = udp_backend[&cport];
        let f = udp_frame(
            BACKEND_MACS[b],
            mac1,
            (BACKENDS[b], UDP_BACKEND_PORT),
            (CLIENT, cport),
            format!("answer-{i}").as_bytes(),
        );
        inject(&pool, p1, usize::from(i) % 2, &f);
    }
    let out = expect_frames(
        running,
        p0,
        usize::from(N_UDP),
        "UDP responses out of port 0",
    );
    let mut seen = HashSet::new();
    for (_, f) in &out {
        let o = parse_out(f);
        let cport = udp_of(&o).destination_port;
        check_reply(&o, mac0, cport, 53);
        assert_eq!(o.payload, format!("answer-{}", cport - 20_000).as_bytes());
        assert!(seen.insert(cport));
    }
    let udp_backends: HashSet<usize> = udp_backend.values().copied().collect();
    assert!(
        udp_backends.len() >= 2,
        "UDP flows spread over backends: {udp_backend:?}"
    );
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 2 (UDP, {N_UDP} flows over backends {udp_backends:?}) ok in {:?}",
        t.elapsed()
    );

    // ---- 3. table swap removing backend .13 ----
    let t = Instant::now();
    let cfg2 = Config::parse(&yaml(&[0, 1]), "dataplane_ring_v2.yaml").expect("config v2");
    assert_eq!(
        cfg.restart_needed(&cfg2),
        None,
        "a backend change needs no restart"
    );
    let v2 = publisher.publish(cfg2.table_spec().unwrap());
    assert_eq!(v2, v1 + 1);
    wait_until("table v2 on every worker", running, || {
        running
            .stats
            .iter()
            .all(|s| s.table_version.load(Ordering::Relaxed) == v2)
    });
    let grace_us = publisher.metrics.last_grace_us.load(Ordering::Relaxed);
    // An established flow to .13 keeps going to .13 (ACK on the non-owner queue).
    let (&old_port, _) = backend_of
        .iter()
        .filter(|(_, &b)| b == 2)
        .min()
        .expect("a flow to .13");
    let i = u32::from(old_port - 10_000);
    let f = tcp_frame(
        CLIENT_MAC,
        mac0,
        (CLIENT, old_port),
        (VIP, 80),
        1001 + i,
        false,
        Some(50_001 + i),
    );
    inject(&pool, p0, 1 - owner(CLIENT, old_port), &f);
    let out = expect_frames(
        running,
        p1,
        1,
        "ACK on an established flow to the removed backend",
    );
    let o = parse_out(&out[0].1);
    assert_eq!(
        check_forward(&o, mac1, old_port, true),
        2,
        "established flow stays on .13"
    );
    let t3 = tcp_of(&o);
    assert!(t3.ack && !t3.syn);
    assert_eq!(
        (t3.sequence_number, t3.acknowledgment_number),
        (1001 + i, 50_001 + i)
    );
    // New flows never go to .13.
    const N_NEW: u16 = 150;
    for i in 0..N_NEW {
        let f = tcp_frame(
            CLIENT_MAC,
            mac0,
            (CLIENT, 30_000 + i),
            (VIP, 80),
            7,
            true,
            None,
        );
        inject(&pool, p0, usize::from(i) % 2, &f);
    }
    let out = expect_frames(running, p1, usize::from(N_NEW), "new SYNs after the swap");
    let mut per_backend2 = [0usize; 3];
    for (_, f) in &out {
        let o = parse_out(f);
        let cport = tcp_of(&o).source_port;
        per_backend2[check_forward(&o, mac1, cport, true)] += 1;
    }
    assert_eq!(
        per_backend2[2], 0,
        "a new flow went to the removed backend: {per_backend2:?}"
    );
    assert!(
        per_backend2[0] > 0 && per_backend2[1] > 0,
        "{per_backend2:?}"
    );
    // UDP: like kube-proxy's stale-conntrack cleanup, a UDP flow to a removed
    // endpoint is flushed and the next datagram picks a live backend.
    if let Some((&up, _)) = udp_backend.iter().filter(|(_, &b)| b == 2).min() {
        let f = udp_frame(CLIENT_MAC, mac0, (CLIENT, up), (VIP, 53), b"again");
        inject(&pool, p0, 0, &f);
        let out = expect_frames(running, p1, 1, "UDP on an existing flow to .13");
        assert_ne!(
            check_forward(&parse_out(&out[0].1), mac1, up, false),
            2,
            "stale UDP flow re-picked"
        );
    }
    // A UDP flow to a surviving backend keeps its backend.
    let (&up, &ub) = udp_backend
        .iter()
        .filter(|(_, &b)| b != 2)
        .min()
        .expect("a UDP flow to .11/.12");
    let f = udp_frame(CLIENT_MAC, mac0, (CLIENT, up), (VIP, 53), b"again");
    inject(&pool, p0, 1, &f);
    let out = expect_frames(
        running,
        p1,
        1,
        "UDP on an existing flow to a surviving backend",
    );
    assert_eq!(check_forward(&parse_out(&out[0].1), mac1, up, false), ub);
    assert_eq!(total_drops(running), 0, "{}", stats_summary(running));
    println!(
        "scenario 3 (swap to v{v2}, grace {grace_us} µs, new flows {per_backend2:?}) ok in {:?}",
        t.elapsed()
    );

    // ---- 4. malformed frames ----
    let t = Instant::now();
    let base = tcp_frame(CLIENT_MAC, mac0, (CLIENT, 40_000), (VIP, 80), 1, true, None);
    let before = (
        total_drops(running),
        drops(running, DropReason::Truncated),
        drops(running, DropReason::BadHeaderLen),
        drops(running, DropReason::BadTotalLen),
    );
    // Truncated Ethernet header.
    let truncated = base[..10].to_vec();
    // IPv4 IHL = 3 (12 bytes).
    let mut ihl3 = base.clone();
    ihl3[14] = 0x43;
    let c = ipv4_header_checksum(&ihl3[14..34]);
    ihl3[24..26].copy_from_slice(&c.to_be_bytes());
    // IPv4 total length larger than the frame (valid header checksum).
    let mut long = base.clone();
    let tl = (base.len() - 14 + 100) as u16;
    long[16..18].copy_from_slice(&tl.to_be_bytes());
    let c = ipv4_header_checksum(&long[14..34]);
    long[24..26].copy_from_slice(&c.to_be_bytes());
    // TCP data offset 4 (< 5).
    let mut doff = base.clone();
    doff[14 + 20 + 12] = 0x40;
    // A well-formed frame addressed to another unicast MAC.
    let mut foreign = base.clone();
    foreign[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x99]);
    let not_for_us = drops(running, DropReason::NotForUs);
    for (k, f) in [&truncated, &ihl3, &long, &doff, &foreign]
        .into_iter()
        .enumerate()
    {
        inject(&pool, p0, k % 2, f);
    }
    wait_until("5 bad frames counted as drops", running, || {
        total_drops(running) >= before.0 + 5
    });
    expect_silence(
        running,
        &wire,
        Duration::from_millis(50),
        "malformed frames",
    );
    let after = (
        total_drops(running),
        drops(running, DropReason::Truncated),
        drops(running, DropReason::BadHeaderLen),
        drops(running, DropReason::BadTotalLen),
    );
    assert_eq!(after.0 - before.0, 5, "{}", stats_summary(running));
    assert_eq!(
        drops(running, DropReason::NotForUs) - not_for_us,
        1,
        "foreign MAC: {}",
        stats_summary(running)
    );
    assert_eq!(
        after.1 - before.1,
        1,
        "truncated Ethernet: {}",
        stats_summary(running)
    );
    assert_eq!(
        after.2 - before.2,
        2,
        "IHL=3 and doff=4: {}",
        stats_summary(running)
    );
    assert_eq!(
        after.3 - before.3,
        1,
        "total_len > frame: {}",
        stats_summary(running)
    );
    // A normal flow still works afterwards (the same tuple as the malformed ones).
    inject(&pool, p0, 1, &base);
    let out = expect_frames(running, p1, 1, "SYN after malformed frames");
    let o = parse_out(&out[0].1);
    let b = check_forward(&o, mac1, 40_000, true);
    assert_ne!(b, 2);
    let f = tcp_frame(
        BACKEND_MACS[b],
        mac1,
        (BACKENDS[b], TCP_BACKEND_PORT),
        (CLIENT, 40_000),
        9,
        true,
        Some(2),
    );
    inject(&pool, p1, 0, &f);
    let out = expect_frames(running, p0, 1, "SYN-ACK after malformed frames");
    check_reply(&parse_out(&out[0].1), mac0, 40_000, 80);
    assert_eq!(total_drops(running), after.0);
    println!(
        "scenario 4 (malformed frames dropped and counted) ok in {:?}",
        t.elapsed()
    );

    // ---- 5. ARP ----
    let t = Instant::now();
    let replies_before = sum(running, |s| &s.neighbor_replies);
    for (k, target) in [NODE0, VIP].into_iter().enumerate() {
        let q = k % 2;
        inject(&pool, p0, q, &arp_request(CLIENT_MAC, CLIENT, target));
        let out = expect_frames(running, p0, 1, "ARP reply");
        let (oq, f) = &out[0];
        assert_eq!(*oq, q, "ARP is answered by the worker that received it");
        let (eth, rest) = Ethernet2Header::from_slice(f).expect("ARP reply ethernet");
        assert_eq!(eth.destination, CLIENT_MAC);
        assert_eq!(eth.source, mac0);
        assert_eq!(eth.ether_type, etherparse::EtherType::ARP);
        assert!(rest.len() >= 28, "ARP body {} bytes", rest.len());
        assert_eq!(
            &rest[..8],
            &[0, 1, 0x08, 0x00, 6, 4, 0, 2],
            "htype/ptype/hlen/plen/op=reply"
        );
        assert_eq!(&rest[8..14], &mac0, "sender MAC is the port's");
        assert_eq!(&rest[14..18], &target, "sender IP is the asked address");
        assert_eq!(&rest[18..24], &CLIENT_MAC, "target MAC is the requester's");
        assert_eq!(&rest[24..28], &CLIENT, "target IP is the requester's");
        expect_silence(running, &wire, Duration::from_millis(10), "after ARP reply");
    }
    assert_eq!(sum(running, |s| &s.neighbor_replies), replies_before + 2);
    // A request for an address we do not own is not answered.
    inject(
        &pool,
        p0,
        0,
        &arp_request(CLIENT_MAC, CLIENT, [198, 18, 0, 77]),
    );
    expect_silence(
        running,
        &wire,
        Duration::from_millis(50),
        "ARP for a foreign address",
    );
    assert_eq!(total_drops(running), after.0);
    println!("scenario 5 (ARP) ok in {:?}", t.elapsed());

    // ---- shutdown ----
    // The ring PMD's own counters agree with what crossed the wire.
    let ps = running.port_stats();
    println!("port stats: {ps:?}");
    for (i, w) in wire.iter().enumerate() {
        let c = ps[i].expect("port stats");
        assert_eq!(
            (c.ipackets, c.opackets),
            (w.sent.get(), w.got.get()),
            "port {i} packet counters"
        );
        assert_eq!(
            (c.imissed, c.ierrors, c.oerrors, c.rx_nombuf),
            (0, 0, 0, 0),
            "port {i} error counters"
        );
    }
    let rx_total: u64 = wire.iter().map(|w| w.sent.get()).sum();
    let tx_total: u64 = wire.iter().map(|w| w.got.get()).sum();
    assert_eq!(sum(running, |s| &s.rx_packets), rx_total);
    assert_eq!(sum(running, |s| &s.tx_packets), tx_total);
    println!("final stats: {}", stats_summary(running));
    // Nothing may be left on the wire that holds mbufs of the dataplane's
    // pool, which shutdown frees.
    expect_silence(running, &wire, Duration::from_millis(10), "before shutdown");
    let codes = guard.running.take().unwrap().shutdown(&eal);
    drop(guard);
    assert_eq!(codes, vec![0; N_WORKERS], "worker exit codes");
    drop(wire);
    drop(pool);
    drop(publisher);
    drop(eal);
    println!("total {:?}", t0.elapsed());
}
